"""The catalogue of bad inputs and faults (docs/reliability.md): each gives one clear error or a clean recovery."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import images, tiny_hfunction_file
from PIL import Image

import asyrp.build as build
import asyrp.ops.claims as claims
import asyrp.tasks.edit as edit_task
import asyrp.tasks.edit_request as edit_request
import asyrp.tasks.train as train_task
from asyrp.checks import check_arch
from asyrp.config import compose
from asyrp.data.images import scan_images
from asyrp.hfunctions import DeltaBlock, load_hfunction_checkpoint
from asyrp.ops import secrets
from asyrp.ops.cli import check_overrides, run_cli
from asyrp.ops.errors import AsyrpUserError, TrainingDiverged
from asyrp.ops.io import atomic_write_png

TESTS = Path(__file__).resolve().parents[1]
REF = TESTS / "fixtures" / "reference_nets"


class _Payload:
    """Pickles as a call to open(marker, "w"): loading it unsafely would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


# -- fixtures: a tiny backbone and h-function checkpoints saved directly ------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    bb = tiny_hfunction_file(d, official=True)
    faces = d / "faces"
    faces.mkdir()
    for i, img in enumerate(images(3, size=40, seed=1)):
        atomic_write_png(img, faces / f"face_{i}.png")
    return {"dir": d, "backbone": bb, "hf": d / "hf.pt", "official": d / "hf_official.pth", "faces": faces}


def edit_cfg(out, *overrides):
    return compose("edit", ["arch=tiny_ddpm", "batch_size=2", "progress=false", *overrides], output_dir=out)


# == 1. checkpoints ================================================================================================
def _tiny_arch(path):
    tiny = torch.load(REF / "ddpm_tiny.pt", weights_only=True)
    return {"name": "tiny", "family": "ddpm", "config": tiny["config"], "checkpoint": str(path)}, tiny


def test_backbone_checkpoint_faults_name_the_file_and_the_fix(tmp_path):
    arch, tiny = _tiny_arch(tmp_path / "missing.ckpt")
    with pytest.raises(AsyrpUserError, match=r"missing.ckpt.*(Download|ASYRP_CHECKPOINTS)"):
        check_arch(arch)  # before any network: the config check
    good = tmp_path / "good.ckpt"
    torch.save(tiny["state_dict"], good)
    data = good.read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.ckpt").write_bytes(b"this is not a checkpoint" * 10)
    for name in ("trunc.ckpt", "junk.ckpt"):
        arch["checkpoint"] = str(tmp_path / name)
        with pytest.raises(AsyrpUserError, match=rf"{name}.*re-download"):
            build.backbone(arch)
    # another family (an ADM checkpoint for a DDPM config) and another size (channels differ)
    adm = torch.load(REF / "adm_tiny.pt", weights_only=True)
    torch.save(adm["state_dict"], tmp_path / "adm.ckpt")
    arch["checkpoint"] = str(tmp_path / "adm.ckpt")
    with pytest.raises(AsyrpUserError, match=r"adm.ckpt.*does not fit family 'ddpm'.*(arch=|config)"):
        build.backbone(arch)
    arch["checkpoint"] = str(good)
    arch["config"] = dict(tiny["config"], ch=int(tiny["config"]["ch"]) * 2)
    with pytest.raises(AsyrpUserError, match=r"good.ckpt.*mis-shaped keys"):
        build.backbone(arch)


def test_pickled_code_in_checkpoints_is_refused_never_run(tmp_path, world):
    marker = tmp_path / "executed"
    arch, tiny = _tiny_arch(tmp_path / "evil.ckpt")
    torch.save({"state_dict": tiny["state_dict"], "hook": _Payload(str(marker))}, tmp_path / "evil.ckpt")
    with pytest.raises(AsyrpUserError, match=r"evil.ckpt.*refused for safety"):
        build.backbone(arch)
    torch.save(
        {"0": torch.load(world["official"], weights_only=True)["0"], "hook": _Payload(str(marker))},
        tmp_path / "evil.pth",
    )
    with pytest.raises(AsyrpUserError, match=r"evil.pth.*refused for safety.*re-save its tensors only"):
        load_hfunction_checkpoint(tmp_path / "evil.pth", world["backbone"], "tiny_ddpm")
    assert not marker.exists()


def test_hfunction_checkpoint_faults(tmp_path, world):
    bb = world["backbone"]
    with pytest.raises(AsyrpUserError, match=r"not found: .*nope.pt\. Pass checkpoint="):
        load_hfunction_checkpoint(tmp_path / "nope.pt", bb)
    data = world["hf"].read_bytes()
    (tmp_path / "trunc.pt").write_bytes(data[: len(data) // 3])
    with pytest.raises(AsyrpUserError, match=r"trunc.pt: the file is truncated.*re-download"):
        load_hfunction_checkpoint(tmp_path / "trunc.pt", bb)
    # an official block for a 512-channel bottleneck on the 64-channel tiny backbone: refused before editing
    torch.save({"0": DeltaBlock("ddpm", 512, 512).state_dict()}, tmp_path / "big.pth")
    with pytest.raises(AsyrpUserError, match=r"big.pth does not fit the bottleneck of arch 'tiny_ddpm'.*trained for"):
        load_hfunction_checkpoint(tmp_path / "big.pth", bb, "tiny_ddpm")
    # a backbone checkpoint passed as the h-function
    torch.save(torch.load(REF / "ddpm_tiny.pt", weights_only=True)["state_dict"], tmp_path / "backbone.pt")
    with pytest.raises(AsyrpUserError, match=r"backbone.pt does not fit.*not a backbone checkpoint"):
        load_hfunction_checkpoint(tmp_path / "backbone.pt", bb)
    # ours, for another bottleneck shape
    payload = torch.load(world["hf"], weights_only=True)
    payload["h_shape"] = [512, 8, 8]
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(AsyrpUserError, match=r"other.pt was trained for h of shape \[512, 8, 8\].*pass arch=tiny_ddpm"):
        load_hfunction_checkpoint(tmp_path / "other.pt", bb, "tiny_ddpm")


def test_resume_checkpoint_faults_one_line_before_any_work(tmp_path, world, no_networks, capsys):
    """ckpt_path (or the run's own last.ckpt, found by rerunning the command) is read safely before any network is
    built: truncated, pickled code, or not a training checkpoint, each one line naming the file and the fix."""
    marker = tmp_path / "executed"
    state = {"state_dict": {"hfunc.w": torch.zeros(3)}, "global_step": 4, "epoch": 0, "loops": {}}
    torch.save(state, tmp_path / "good.ckpt")
    data = (tmp_path / "good.ckpt").read_bytes()
    (tmp_path / "trunc.ckpt").write_bytes(data[: len(data) // 2])
    torch.save(dict(state, hook=_Payload(str(marker))), tmp_path / "evil.ckpt")
    cases = [
        ("trunc.ckpt", r"cannot resume from \S*trunc.ckpt: the file is truncated.*pass ckpt_path="),
        ("evil.ckpt", r"cannot resume from \S*evil.ckpt: .*refused for safety.*pass ckpt_path="),
        (world["hf"], r"cannot resume from \S*hf.pt: it is not a Lightning training checkpoint.*edit.py"),
    ]
    for name, needle in cases:
        run_dir = tmp_path / f"run_{Path(name).stem}"
        cfg = compose("train", ["debug=smoke", f"ckpt_path={tmp_path / name}"], output_dir=run_dir)
        with pytest.raises(SystemExit) as exc:
            run_cli(train_task.train, cfg)
        err = capsys.readouterr().err.strip().splitlines()
        import re

        assert exc.value.code == 2 and len(err) == 1 and re.search(needle, err[0]), err
        assert not run_dir.exists()  # refused before the run folder was claimed
    assert not marker.exists()
    # the run's own last.ckpt, torn (e.g. a kill during a copy-based write): the rerun says which file to delete
    cfg = compose("train", ["debug=smoke"], output_dir=tmp_path / "own")
    assert claims.claim_train_dir(cfg) is None  # stamp the folder as this run's
    (tmp_path / "own" / "checkpoints").mkdir()
    (tmp_path / "own" / "checkpoints" / "last.ckpt").write_bytes(data[: len(data) // 3])
    with pytest.raises(SystemExit):
        run_cli(train_task.train, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot resume from" in err[0] and "last.ckpt" in err[0] and "delete" in err[0], err


# == 2. images =====================================================================================================
def _zoo(folder: Path) -> dict[str, str | None]:
    """Every kind of file a folder may hold -> None (usable) or the reason it is skipped."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = (rng.random((48, 64, 3)) * 255).astype(np.uint8)
    Image.fromarray(rgb).save(folder / "a_rgb.png")
    Image.fromarray(np.dstack([rgb, np.full((48, 64), 128, np.uint8)])).save(folder / "b_rgba.png")
    Image.fromarray(rgb[..., 0]).save(folder / "c_gray.jpg")
    Image.fromarray((rng.random((40, 40)) * 65535).astype(np.uint16)).save(folder / "d_16bit.png")
    Image.fromarray(rgb).resize((2000, 1500)).save(folder / "e_large.jpg", quality=50)
    Image.fromarray(rgb[:3, :2]).save(folder / "f_tiny.png")
    full = (folder / "a_rgb.png").read_bytes()
    (folder / "g_truncated.png").write_bytes(full[: len(full) // 2])
    damaged = bytearray(full)  # complete file, intact header, garbage in the compressed pixel data
    idat = damaged.find(b"IDAT")
    damaged[idat + 20 : idat + 60] = bytes(b ^ 0xFF for b in damaged[idat + 20 : idat + 60])
    (folder / "k_damaged.png").write_bytes(bytes(damaged))
    (folder / "h_empty.png").write_bytes(b"")
    (folder / "i_text.jpg").write_text("not an image")
    bomb = Image.new("1", (1, 1))
    bomb.save(folder / "j_bomb.png")
    raw = bytearray((folder / "j_bomb.png").read_bytes())  # claim 60000 x 60000 pixels in the header
    raw[16:24] = (60000).to_bytes(4, "big") * 2
    import zlib

    raw[29:33] = zlib.crc32(bytes(raw[12:29])).to_bytes(4, "big")
    (folder / "j_bomb.png").write_bytes(bytes(raw))
    (folder / "readme.txt").write_text("not an image, reported as such")
    frames = [Image.fromarray(np.roll(rgb, 8 * i, 1)) for i in range(3)]
    frames[0].save(folder / "l_anim.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    (folder / "m_photo.heic").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    (folder / ".hidden.png").write_bytes(full)
    return {
        ".hidden.png": "hidden file",
        "a_rgb.png": None,
        "b_rgba.png": None,
        "c_gray.jpg": None,
        "d_16bit.png": None,
        "e_large.jpg": None,
        "f_tiny.png": None,
        "g_truncated.png": "truncated",
        "h_empty.png": "empty file",
        "i_text.jpg": "not an image",
        "j_bomb.png": "(too large|decompression bomb)",
        "k_damaged.png": "damaged or truncated",
        "l_anim.gif": None,
        "m_photo.heic": "unsupported image format .heic.*convert",
        "readme.txt": "not an image",
    }


def test_image_zoo_valid_processed_bad_skipped_and_listed(tmp_path, world):
    expected = _zoo(tmp_path / "zoo")
    good, skipped = scan_images(tmp_path / "zoo", None, 32)
    assert [p.name for p in good] == [k for k, v in expected.items() if v is None]
    import re

    assert {p.name for p, _ in skipped} == {k for k, v in expected.items() if v is not None}
    for p, reason in skipped:
        assert re.search(expected[p.name], reason), (p.name, reason)
    # the 16-bit image is scaled, not clipped to white
    from asyrp.data.images import read_image

    x, notes = read_image(tmp_path / "zoo" / "d_16bit.png", 32)
    assert x.shape == (3, 32, 32) and -0.9 < float(x.mean()) < 0.9 and any("16" in n for n in notes)
    # end to end: seven images edited (centre-crop + resize to 32), the other files skipped and listed in the manifest
    res = edit_task.edit(
        edit_cfg(tmp_path / "run", f"checkpoint={world['hf']}", f"input_dir={tmp_path / 'zoo'}", "grid_rows=3")
    )
    out = tmp_path / "run" / "edited"
    assert res["edited"] == 7
    man = json.loads((out / "manifest.json").read_text())
    assert (
        man["complete"]
        and len(man["inputs"]) == 7
        and {Path(s["path"]).name for s in man["skipped"]} == {k for k, v in expected.items() if v is not None}
    )
    assert man["t_edit"] == 500 and man["t_boost"] == 200 and [i["seed"] for i in man["inputs"]] == list(range(7))
    for it in man["inputs"]:
        with Image.open(out / it["outputs"][0]) as im:
            assert im.size == (32, 32) and im.mode == "RGB"
    from asyrp.grid import grid_layout

    lay = grid_layout(out / "grid.png")  # 3 rows (grid_rows) x (input, edit), 32 px cells upscaled to 128
    assert (lay["rows"], lay["columns"], lay["cell"]) == (3, 2, [128, 128])
    assert lay["row_labels"] == [it["id"] for it in man["inputs"][:3]] and lay["column_labels"][0] == "input"
    # the animated GIF: its first frame, and the manifest says so
    gif = next(it for it in man["inputs"] if it["source"].endswith("l_anim.gif"))
    assert any("first frame" in n for n in gif["notes"])


def test_empty_or_unusable_folder_is_one_error_and_no_output(tmp_path, world):
    (tmp_path / "empty").mkdir()
    with pytest.raises(AsyrpUserError, match="no images"):
        edit_task.edit(edit_cfg(tmp_path / "r", f"checkpoint={world['hf']}", f"input_dir={tmp_path / 'empty'}"))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"")
    (tmp_path / "bad" / "y.png").write_bytes(b"junk")
    with pytest.raises(AsyrpUserError, match=r"none of the 2 files .*x.png: empty file"):
        edit_task.edit(edit_cfg(tmp_path / "r", f"checkpoint={world['hf']}", f"input_dir={tmp_path / 'bad'}"))
    with pytest.raises(AsyrpUserError, match="no files match"):
        edit_task.edit(edit_cfg(tmp_path / "r", f"checkpoint={world['hf']}", f"input_dir={tmp_path / 'bad'}/*.jpg"))
    assert not (tmp_path / "r" / "edited").exists()


# == 3. configs: rejected before any network is loaded, naming the key ============================================
@pytest.fixture()
def no_networks(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("a network was loaded before the config was checked")

    monkeypatch.setattr(build, "backbone", boom)
    monkeypatch.setattr(edit_request, "read_hfunction_file", boom)


@pytest.mark.parametrize(
    "overrides,needle",
    [
        (["plan.t_edit=300", "plan.t_boost=400"], "t_boost=400 is above t_edit=300.*set plan.t_boost <= plan.t_edit"),
        (["plan.n_gen=0"], "n_gen=0.*>= 2.*set plan.n_gen"),
        (["plan.n_inv=abc"], "plan.n_inv='abc' must be an integer"),
        (["plan.t_edit=1500"], "t_edit=1500 is outside the schedule.*set plan.t_edit"),
        (["plan.t0=1200"], "t0=1200 is outside the schedule.*set plan.t0"),
        (["plan.t_boost=-3"], "t_boost=-3 is outside the schedule"),
        (["arch.family=unet9"], "arch.family='unet9'"),
        (["plan.mode=sideways"], "plan.mode='sideways' is not one of"),
        (["sweep=[0,1]", "strip=3"], "sweep and strip are both set"),
        (["strip=1"], "strip=1 must be >= 2"),
        (["coeffs=[1,2]"], "coeffs has 2 values for 1 checkpoints"),
        (["n_random=4"], "set exactly one input"),
        (["batch_size=0"], "batch_size=0 must be >= 1"),
    ],
)
def test_bad_edit_config_rejected_before_work(overrides, needle, tmp_path, world, no_networks, capsys):
    cfg = edit_cfg(tmp_path / "r", f"checkpoint={world['hf']}", f"input_dir={world['faces']}", *overrides)
    with pytest.raises(SystemExit) as exc:
        run_cli(edit_task.edit, cfg)
    err = capsys.readouterr().err.strip().splitlines()
    assert exc.value.code == 2 and len(err) == 1 and err[0].startswith("error: ")
    import re

    assert re.search(needle, err[0]), err[0]
    assert not (tmp_path / "r" / "edited").exists()


def test_missing_required_value_names_the_key(tmp_path, world, no_networks, capsys):
    cfg = compose("edit", ["arch=tiny_ddpm", f"input_dir={world['faces']}"], output_dir=tmp_path / "r")
    with pytest.raises(SystemExit):
        run_cli(edit_task.edit, cfg)
    assert "checkpoint is required but not set (???): pass checkpoint=" in capsys.readouterr().err


@pytest.mark.parametrize(
    "override,needle",
    [
        ("plan.t_boost=600", "t_boost=600 is above t_edit=500.*plan.t_boost"),
        ("plan.n_inv=0", "plan.n_inv"),
        ("plan.mode=sideways", "plan.mode='sideways'"),
        ("model.n_iter=0", "model.n_iter=0 must be >= 1"),
        ("arch.family=unet9", "arch.family='unet9'"),
    ],
)
def test_bad_train_config_rejected_before_work(override, needle, tmp_path, no_networks, capsys):
    cfg = compose("train", ["debug=smoke", override], output_dir=tmp_path)
    with pytest.raises(SystemExit):
        run_cli(train_task.train, cfg)
    import re

    assert re.search(needle, capsys.readouterr().err)
    assert not (tmp_path / "checkpoints").exists() and not (tmp_path / claims.RUN_STAMP).exists()


def test_unknown_config_option_is_one_line():
    assert "unknown arch 'tiny_dpm': there is no conf/arch/tiny_dpm.yaml; choose one of" in check_overrides(
        ["arch=tiny_dpm"]
    )
    assert "unknown attribute 'smilin'" in check_overrides(["debug=smoke", "attribute=smiling,smilin"])
    assert check_overrides(["arch=tiny_ddpm", "+experiment=celeba_smiling", "model.lr=2", "~logger"]) is None


def test_user_errors_are_one_redacted_line_unless_debugging(monkeypatch, capsys):
    """Without a switch: one ``error:`` line (secret values replaced), exit 2, no traceback. ASYRP_DEBUG=1 (or
    HYDRA_FULL_ERROR=1) re-raises the same error with its traceback. Other exceptions (bugs) always propagate."""
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-abcdefgh")

    def bad():
        raise AsyrpUserError("t_edit=1500 is outside the schedule\n(token tok-abcdefgh): set t_edit")

    for k in ("ASYRP_DEBUG", "HYDRA_FULL_ERROR"):
        monkeypatch.delenv(k, raising=False)
    with pytest.raises(SystemExit) as exc:
        run_cli(bad)
    assert exc.value.code == 2
    assert (
        capsys.readouterr().err
        == f"error: t_edit=1500 is outside the schedule (token {secrets.REDACTED}): set t_edit\n"
    )
    for k in ("ASYRP_DEBUG", "HYDRA_FULL_ERROR"):
        monkeypatch.setenv(k, "1")
        with pytest.raises(AsyrpUserError, match="outside the schedule"):
            run_cli(bad)
        monkeypatch.delenv(k)
    with pytest.raises(ZeroDivisionError):
        run_cli(lambda: 1 / 0)


# == 4. training faults ============================================================================================
@pytest.mark.parametrize(
    "bad,needle",
    [
        ("nan", r"train/loss\S*=nan"),  # loss * nan: NaN loss, NaN gradients, NaN weights
        ("inf", r"train/loss\S*=inf"),  # loss + inf: infinite loss, finite gradients (weights stay finite)
    ],
)
def test_nan_or_inf_loss_stops_and_keeps_the_last_good_checkpoint(bad, needle, tmp_path, monkeypatch):
    from asyrp.losses import AsyrpLoss

    real, calls = AsyrpLoss.__call__, [0]

    def forward(self, *a, **k):
        terms = real(self, *a, **k)
        calls[0] += 1
        if calls[0] >= 5:  # the 5th optimiser step (first timestep of the 3rd batch) goes bad
            loss = terms["loss"] * float("nan") if bad == "nan" else terms["loss"] + float("inf")
            terms = dict(terms, loss=loss)
        return terms

    monkeypatch.setattr(AsyrpLoss, "__call__", forward)
    cfg = compose(
        "train",
        [
            "debug=smoke",
            "~logger",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "dataset.batch_size=1",
            "callbacks.edit_grid=null",
            "trainer.limit_val_batches=0",
        ],
        output_dir=tmp_path / "run",
    )
    with pytest.raises(
        TrainingDiverged, match=r"diverged at step 6.*last good checkpoint is .*last.ckpt \(step 4\)"
    ) as exc:
        train_task.train(cfg)
    import re

    assert re.search(needle, str(exc.value)), str(exc.value)
    ck = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True, map_location="cpu")
    assert ck["global_step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["state_dict"].values())
    assert not (tmp_path / "run" / "checkpoints" / "hfunction.pt").exists()  # written at epoch end only: never NaN


# == 5. outputs: atomic, never over another run's, the same run resumes ===========================================
def test_edit_output_dir_belongs_to_one_run(tmp_path, world):
    base = [f"checkpoint={world['hf']}", f"input_dir={world['faces']}", f"output_dir={tmp_path / 'out'}"]
    edit_task.edit(edit_cfg(tmp_path / "r1", *base))
    first = (tmp_path / "out" / "face_0.png").read_bytes()
    again = edit_task.edit(edit_cfg(tmp_path / "r2", *base))  # same settings: a resume with nothing left to do
    assert again["edited"] == 0 and again["done_before"] == 3
    with pytest.raises(AsyrpUserError, match="another edit run.*overwrite=true"):
        edit_task.edit(edit_cfg(tmp_path / "r3", *base, "strength=2"))
    assert (tmp_path / "out" / "face_0.png").read_bytes() == first
    res = edit_task.edit(edit_cfg(tmp_path / "r4", *base, "strength=2", "overwrite=true"))
    assert res["edited"] == 3 and json.loads((tmp_path / "out" / "manifest.json").read_text())["coefficients"] == [
        [2.0]
    ]
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.startswith(".")]  # no temp files left
    # a folder of PNGs that no edit run wrote (no manifest.json) is not written into either
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "face_0.png").write_bytes(first)
    with pytest.raises(AsyrpUserError, match="already holds PNG files that are not from an edit run.*overwrite=true"):
        edit_task.edit(edit_cfg(tmp_path / "r5", *base[:2], f"output_dir={tmp_path / 'photos'}"))
    assert [p.name for p in (tmp_path / "photos").iterdir()] == ["face_0.png"]


@pytest.mark.parametrize("writer", ["png", "json", "torch"])
def test_atomic_writes_show_the_old_file_or_the_new_never_half(writer, tmp_path, monkeypatch):
    """Each writer goes through a temporary file beside the target and os.replace; a failure half-way through the
    write leaves the previous file untouched and no temporary file behind."""
    import asyrp.ops.io as io

    target = tmp_path / {"png": "out.png", "json": "manifest.json", "torch": "hfunction.pt"}[writer]
    write = {
        "png": lambda: io.atomic_write_png(torch.zeros(3, 4, 4), target),
        "json": lambda: io.atomic_write_json({"complete": True}, target),
        "torch": lambda: io.atomic_save({"w": torch.ones(2)}, target),
    }[writer]
    replaced = []
    real_replace = os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b))[1])
    write()
    ((src, dst),) = replaced
    assert (
        dst == target
        and src.parent == target.parent
        and src.name.startswith(f".{target.name}.")
        and src.suffix == ".tmp"
    )
    old = target.read_bytes()

    # every writer serialises in memory, then writes the temporary file: the disk is "full" when the bytes are
    # flushed to it (where NFS / quota filesystems report it), after they reached the temporary file
    monkeypatch.setattr(io.os, "fsync", lambda fd: (_ for _ in ()).throw(OSError(28, "No space left on device")))
    with pytest.raises(OSError, match="No space left") as err:
        write()
    assert err.value.asyrp_path == target and err.value.asyrp_size > 0  # named in the one-line message
    assert target.read_bytes() == old and [p.name for p in tmp_path.iterdir()] == [target.name]


def test_lightning_checkpoints_are_renamed_into_place_beside_the_target(tmp_path, monkeypatch):
    """last.ckpt is staged in its own folder and renamed (Lightning's own writer stages it in the system temp folder
    and moves it, which is a copy, not atomic, when that folder is on another filesystem)."""
    import asyrp.ops.io as io

    replaced, real_replace = [], os.replace
    monkeypatch.setattr(io.os, "replace", lambda a, b: (replaced.append((Path(a), Path(b))), real_replace(a, b))[1])
    cfg = compose(
        "train",
        [
            "debug=smoke",
            "~logger",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "callbacks.edit_grid=null",
            "trainer.limit_val_batches=0",
            "+trainer.max_steps=2",
        ],
        output_dir=tmp_path / "run",
    )
    train_task.train(cfg)
    last = tmp_path / "run" / "checkpoints" / "last.ckpt"
    moves = [(a, b) for a, b in replaced if b == last]
    assert moves and all(a.parent == last.parent and a.name.startswith(".last.ckpt.") for a, _ in moves), replaced
    assert [p.name for p in last.parent.iterdir() if p.name.startswith(".")] == []
    assert torch.load(last, weights_only=True)["global_step"] == 2


def test_train_run_dir_belongs_to_one_run(tmp_path):
    cfg = compose("train", ["debug=smoke"], output_dir=tmp_path)
    assert claims.claim_train_dir(cfg) is None
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "last.ckpt").write_bytes(b"x")
    assert claims.claim_train_dir(cfg) == tmp_path / "checkpoints" / "last.ckpt"  # the same run: resume
    other = compose("train", ["debug=smoke", "model.optimizer.lr=0.1"], output_dir=tmp_path)
    with pytest.raises(AsyrpUserError, match="another training run.*overwrite=true"):
        claims.claim_train_dir(other)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists()
    other = compose("train", ["debug=smoke", "model.optimizer.lr=0.1", "overwrite=true"], output_dir=tmp_path)
    assert claims.claim_train_dir(other) is None and not (tmp_path / "checkpoints").exists()


# == 6. secrets ====================================================================================================
def test_redaction_of_configs_logs_and_files(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("SOME_SERVICE_TOKEN", "tok-abcdefgh")
    monkeypatch.setenv("PLAIN_KEY", "1")  # too short to be treated as a secret value
    cfg = {
        "logger": {"wandb": {"api_key": "k-123456789", "project": "asyrp"}},
        "note": "token is tok-abcdefgh",
        "n": 1,
        "db": {"password": 42},
    }
    red = secrets.redact(cfg)
    assert red["logger"]["wandb"]["api_key"] == secrets.REDACTED and red["logger"]["wandb"]["project"] == "asyrp"
    assert red["note"] == f"token is {secrets.REDACTED}" and red["n"] == 1 and red["db"]["password"] == secrets.REDACTED
    f = tmp_path / "overrides.yaml"
    f.write_text("- logger.wandb.api_key=k-123456789\n- seed=1\nhf_token: abcdefgh123\n")
    secrets.scrub_files([f])
    text = f.read_text()
    assert "k-123456789" not in text and "abcdefgh123" not in text and "seed=1" in text
    import logging

    rec = logging.LogRecord("x", logging.INFO, "f", 1, "using %s", ("tok-abcdefgh",), None)
    secrets.RedactingFilter().filter(rec)
    assert rec.getMessage() == f"using {secrets.REDACTED}"
    # the command line W&B records: redacted only while wandb.init runs (DDP relaunches with the real one)
    monkeypatch.setattr(sys, "argv", ["train.py", "logger=wandb", "+wandb_api_key=tok-abcdefgh"])
    with secrets.redacted_argv():
        assert sys.argv[1:] == ["logger=wandb", f"+wandb_api_key={secrets.REDACTED}"]
    assert sys.argv[2] == "+wandb_api_key=tok-abcdefgh"
