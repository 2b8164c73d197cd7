"""conf/constraint through train.py and edit.py: the projection layer trains as a fixed layer after f, is stored in
hfunction.pt, and edit.py applies it from that file alone (and in a composition); bad directions stop the run before
the inversion cache or any training."""

import pytest
import torch
from helpers import images, tiny_directions

from asyrp.config import compose
from asyrp.hfunctions import load_hfunction_checkpoint
from asyrp.hfunctions.constrained import Constrained
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.io import atomic_write_png
from asyrp.tasks.edit import edit
from asyrp.tasks.train import train

BASE = ["debug=smoke", "~logger", "callbacks.edit_grid=null", "trainer.limit_val_batches=0"]


def constraint_overrides(files) -> list[str]:
    return ["constraint=project", f"constraint.directions=[{','.join(str(p) for p in files)}]"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("train")
    files = tiny_directions(out / "dirs")
    cfg = compose("train", [*BASE, f"dataset.cache_dir={out / 'cache'}", *constraint_overrides(files)], output_dir=out)
    _, objects = train(cfg)
    return out / "checkpoints", objects, files


def test_train_stores_the_layer_and_edit_applies_it_from_the_file_alone(trained, tmp_path):
    ckpt, objects, files = trained
    fn = objects["module"].hfunc
    assert isinstance(fn, Constrained) and objects["trainer"].global_step > 0
    stored = torch.load(ckpt / "hfunction.pt", weights_only=True)
    assert stored["hfunction"]["constraints"]["project"]["directions"] == ["keep_0.pt", "keep_1.pt"]
    assert not (ckpt / "hfunction_official.pth").exists()
    moved = tmp_path / "elsewhere.pt"  # the direction files are not needed to edit
    moved.write_bytes((ckpt / "hfunction.pt").read_bytes())
    loaded, _ = load_hfunction_checkpoint(moved, objects["backbone"], "tiny_ddpm")
    h, emb = torch.randn(2, *objects["backbone"].h_shape), torch.randn(2, objects["backbone"].emb_dim)
    with torch.no_grad():
        assert torch.allclose(loaded(h, emb, 666), fn.cpu()(h, emb, 666), atol=1e-6)
        d = loaded(h, emb, 666).reshape(2, -1)
    row = torch.load(files[0], weights_only=True)["state_dict"]["delta_h"][2].reshape(-1)  # t = 666 (ascending)
    assert float((d @ row).abs().max() / (d.norm(dim=1).min() * row.norm())) < 1e-5
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, img in enumerate(images(2, size=32, seed=1)):
        atomic_write_png(img, faces / f"f{i}.png")
    edit_args = ["arch=tiny_ddpm", f"input_dir={faces}", "batch_size=2"]
    res = edit(compose("edit", [f"checkpoint={moved}", *edit_args], output_dir=tmp_path / "one"))
    assert res["t_edit"] == 500 and (tmp_path / "one" / "edited" / "f0.png").is_file()
    both = f"checkpoint=[{moved},{ckpt / 'hfunction.pt'}]"  # a composition applies each file's layer
    edit(compose("edit", [both, *edit_args, "output_dir=" + str(tmp_path / "two")], output_dir=tmp_path / "two"))
    assert (tmp_path / "two" / "f1.png").is_file()


def test_bad_directions_stop_training_before_the_cache(tmp_path):
    files = tiny_directions(tmp_path / "dirs", arch="synthfaces")
    cfg = compose(
        "train",
        [*BASE, f"dataset.cache_dir={tmp_path / 'cache'}", *constraint_overrides(files)],
        output_dir=tmp_path / "r",
    )
    with pytest.raises(AsyrpUserError, match="rerun discover.py with arch=tiny_ddpm"):
        train(cfg)
    assert not any((tmp_path / "cache").rglob("*.pt"))  # nothing inverted, nothing trained


def test_a_bad_outside_mask_stops_discover_before_any_network(tmp_path):
    from asyrp.masks import save_mask
    from asyrp.tasks.discover import check_discover_config

    small = save_mask(torch.eye(16), tmp_path / "m16.pt", source="test", attribute="glasses=True")
    overrides = ["arch=tiny_ddpm", "method=jacobian", f"method.outside={small}", f"input_dir={tmp_path}"]
    with pytest.raises(AsyrpUserError, match="the images are 32x32"):
        check_discover_config(compose("discover", overrides, output_dir=tmp_path / "d"))


def test_an_edit_time_constraint_edits_as_the_stored_one(tmp_path):
    """edit.py constraint=project on a file trained without it: the same images as a file that stores that layer."""
    import json

    from helpers import tiny_hfunction_file

    from asyrp.constraints import constrain
    from asyrp.hfunctions import payload, save_hfunction

    bb = tiny_hfunction_file(tmp_path)  # hf.pt: a delta_block for tiny_ddpm, without a constraint
    files = tiny_directions(tmp_path / "dirs")
    f, meta = load_hfunction_checkpoint(tmp_path / "hf.pt", bb, "tiny_ddpm")
    layer = constrain(f, {"use": "project", "directions": [str(p) for p in files]}, bb, arch_name="tiny_ddpm")
    meta["hfunction"] = {**meta["hfunction"], "constraints": layer.stored_constraints()}
    save_hfunction(
        payload(layer, {k: v for k, v in meta.items() if k not in ("format", "state_dict")}), tmp_path / "c.pt"
    )
    faces = tmp_path / "faces"
    faces.mkdir()
    atomic_write_png(images(1, size=32, seed=1)[0], faces / "f0.png")
    runs = {
        "edit_time": [f"checkpoint={tmp_path / 'hf.pt'}", *constraint_overrides(files)],
        "stored": [f"checkpoint={tmp_path / 'c.pt'}"],
        "none": [f"checkpoint={tmp_path / 'hf.pt'}"],
    }
    for name, extra in runs.items():
        out = tmp_path / name
        edit(compose("edit", ["arch=tiny_ddpm", f"input_dir={faces}", *extra, f"output_dir={out}"], output_dir=out))
    png = {name: (tmp_path / name / "f0.png").read_bytes() for name in runs}
    assert png["edit_time"] == png["stored"] != png["none"]
    assert json.loads((tmp_path / "edit_time" / "manifest.json").read_text())["constraint"]["directions"]
