"""edit.py: a trained hfunction.pt (or its official-layout export) edits a folder; bad inputs fail cleanly."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import images

from asyrp.hfunctions import load_official_hfunction
from asyrp.tasks import edit, train
from asyrp.utils.config import compose
from asyrp.utils.errors import AsyrpUserError
from asyrp.utils.io import atomic_write_png

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    cfg = compose("train", ["debug=smoke", "~logger", f"dataset.cache_dir={out / 'cache'}", "callbacks.edit_grid=null",
                            "trainer.limit_val_batches=0"], output_dir=out)
    train(cfg)
    return out / "checkpoints"


@pytest.fixture()
def faces(tmp_path) -> Path:
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, img in enumerate(images(3, size=40, seed=1)):  # another size than the backbone's 32: resized on load
        atomic_write_png(img, folder / f"face_{i}.png")
    return folder


def edit_cfg(tmp_path, checkpoint, input_dir, *extra):
    return compose("edit", ["arch=tiny_ddpm", f"checkpoint={checkpoint}", f"input_dir={input_dir}", "batch_size=2",
                            *extra], output_dir=tmp_path / "run")


def test_edit_with_our_checkpoint_and_official_export(trained, faces, tmp_path):
    res = edit(edit_cfg(tmp_path, trained / "hfunction.pt", faces))
    out = tmp_path / "run" / "edited"
    assert sorted(p.name for p in out.iterdir()) == ["face_0.png", "face_1.png", "face_2.png"]
    assert res["t_edit"] == 500 and res["n_gen"] == 4  # taken from the checkpoint
    # the official layout holds the same weights
    official = load_official_hfunction(trained / "hfunction_official.pth")
    ours = torch.load(trained / "hfunction.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(official.state_dict()[k], v) for k, v in ours.items())
    res2 = edit(edit_cfg(tmp_path, trained / "hfunction_official.pth", faces, "output_dir=" + str(tmp_path / "o2"),
                         "n_inv=4", "n_gen=4", "t_edit=500", "t_boost=200"))
    for name in ("face_0.png", "face_1.png"):
        assert (tmp_path / "o2" / name).read_bytes() == (out / name).read_bytes()
    assert res2["t_edit"] == 500


def test_missing_checkpoint_and_corrupt_image_leave_no_output(trained, faces, tmp_path):
    with pytest.raises(AsyrpUserError, match="h-function checkpoint not found"):
        edit(edit_cfg(tmp_path, tmp_path / "nope.pt", faces))
    (faces / "face_1.png").write_bytes(b"garbage")
    with pytest.raises(AsyrpUserError, match="face_1.png"):
        edit(edit_cfg(tmp_path, trained / "hfunction.pt", faces))
    assert not (tmp_path / "run" / "edited").exists()
    assert not [p for p in (tmp_path / "run").glob(".*")] if (tmp_path / "run").exists() else True


def test_checkpoint_for_another_backbone_is_refused(trained, faces, tmp_path):
    payload = torch.load(trained / "hfunction.pt", weights_only=True)
    assert payload["hfunction"]["layout"] == "ddpm"  # "auto" resolved when saved
    payload["h_shape"] = [512, 8, 8]  # as if trained on a 256px model
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(AsyrpUserError, match="pass arch=tiny_ddpm"):
        edit(edit_cfg(tmp_path, tmp_path / "other.pt", faces))


def test_edit_script_exit_code(tmp_path, faces):
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "edit.py", "arch=tiny_ddpm", f"checkpoint={tmp_path / 'missing.pt'}",
                           f"input_dir={faces}", f"hydra.run.dir={tmp_path / 'run'}"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "h-function checkpoint not found" in proc.stderr
