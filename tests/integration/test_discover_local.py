"""discover.py's local methods on a tiny backbone: method=region writes a mask file (asyrp.masks), method=loco reads
it and writes an x-space direction that edit.py applies once at t (x_shift); a bad mask is one error before work."""

import json
from pathlib import Path

import pytest
import torch
from helpers import images

from asyrp.config import compose
from asyrp.masks import read_mask, save_mask
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.io import atomic_write_png
from asyrp.tasks.discover import discover
from asyrp.tasks.edit import edit


@pytest.fixture()
def folder(tmp_path) -> Path:
    out = tmp_path / "faces"
    out.mkdir()
    for i, img in enumerate(images(2, size=32, seed=4)):
        atomic_write_png(img, out / f"f{i}.png")
    return out


def cfg(tmp_path, folder, method, *extra):
    return compose(
        "discover",
        [
            "arch=tiny_ddpm",
            "clip=tiny",
            f"method={method}",
            f"input_dir={folder}",
            "n_images=2",
            "plan.n_inv=4",
            "plan.n_gen=4",
            "plan.t_edit=500",
            "plan.t_boost=0",
            f"cache_dir={tmp_path / 'cache'}",
            "judge=none",
            *extra,
        ],
        output_dir=tmp_path / method,
    )


def test_region_then_loco_then_edit(folder, tmp_path):
    res = discover(cfg(tmp_path, folder, "region", "method.blur=0", "method.grow=0", "method.threshold=0.6"))
    mask = read_mask(res["files"][0], image_size=32)
    assert 0 < float(mask["mask"].mean()) < 1 and "clip_grad" in mask["source"]
    assert (tmp_path / "region" / "region.png").is_file()
    over = [f"method.mask={res['files'][0]}", "method.t=600", "method.k=2", "method.r_null=2", "method.iters=2"]
    res = discover(cfg(tmp_path, folder, "loco", *over, "method.n_images=2", "method.choose_images=2"))
    summary = json.loads((tmp_path / "loco" / "directions.json").read_text())
    assert [p.name for p in res["files"]] == ["loco_00.pt"] and summary["edit"]["mode"] == "x_shift"
    assert summary["edit"]["t0"] == summary["edit"]["t_edit"] == 600
    d = torch.load(res["files"][0], weights_only=True)
    assert d["hfunction"]["space"] == "x" and d["direction"]["chosen_by"] == "CLIP text direction"
    assert d["attribute"]["name"] == "synthfaces_smiling" and d["attribute"]["target"]  # the texts that chose it
    edited = edit(
        compose(
            "edit",
            ["arch=tiny_ddpm", f"checkpoint={res['files'][0]}", f"input_dir={folder}", "n_images=1", "sweep=[0,4]"],
            output_dir=tmp_path / "e",
        )
    )
    assert (edited["plan"].t0, edited["plan"].t_edit, edited["plan"].mode) == (
        600,
        600,
        "x_shift",
    )  # one move of x_t at t, read from the file
    a, b = (Path(edited["output_dir"]) / f"f0_{k:02d}.png" for k in (0, 1))
    assert a.read_bytes() != b.read_bytes()


def test_bad_local_settings_are_one_error(folder, tmp_path):
    with pytest.raises(AsyrpUserError, match="method.mask=<mask.pt>"):
        discover(cfg(tmp_path, folder, "loco"))
    small = torch.zeros(16, 16)
    small[4:8, 4:8] = 1
    path = save_mask(small, tmp_path / "small.pt", source="test", attribute="a")
    with pytest.raises(AsyrpUserError, match="16x16 but the images are 32x32"):
        discover(cfg(tmp_path, folder, "loco", f"method.mask={path}"))
    with pytest.raises(AsyrpUserError, match="method.checkpoint"):
        discover(cfg(tmp_path, folder, "region", "method.source=edit"))
    assert not (tmp_path / "loco").exists() and not (tmp_path / "region").exists()  # nothing written


def test_region_of_an_edit(folder, tmp_path):
    """source=edit: the mask is where a given h-space direction changes P_t over the file's own interval."""
    from asyrp import build
    from asyrp.directions import Direction, save_direction

    bb = build.backbone(compose("discover", ["arch=tiny_ddpm"], output_dir=tmp_path).arch)
    d = Direction(torch.randn(*bb.h_shape, generator=torch.Generator().manual_seed(0)), None, "test")
    edit_entry = {
        "t_edit": 500,
        "t_boost": 0,
        "n_inv": 4,
        "n_gen": 4,
        "t0": 999,
        "mode": "asyrp",
        "spacing": "official",
    }
    path = save_direction(d, tmp_path / "dir.pt", bb, arch={"name": "tiny_ddpm"}, edit=edit_entry)
    over = ["method.source=edit", f"method.checkpoint={path}", "method.blur=0", "method.grow=0", "method.threshold=0.5"]
    res = discover(cfg(tmp_path, folder, "region", *over))
    mask = read_mask(res["files"][0], image_size=32)
    assert mask["source"].startswith("discover.py method=region, edit: |P_t^edit - P_t| of dir.pt")
    assert 0 < float(mask["mask"].mean()) < 1
