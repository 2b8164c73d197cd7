"""The edit request is built from a config and a folder without any network: files, plan, coefficients, fingerprint."""

from __future__ import annotations

import pytest
import torch
from helpers import images


def _hfunction_file(path, *, t_edit: int, strength: float, attribute: str):
    """An h-function file as train.py writes it (a global delta_h: no backbone is needed to make it)."""
    from asyrp.hfunctions import GlobalDirection, payload, save_hfunction

    edit = {"n_inv": 6, "n_gen": 6, "t0": 999, "t_edit": t_edit, "t_boost": 0, "mode": "asyrp", "strength": strength}
    info = {
        "hfunction": {"kind": "global"},
        "arch": {"name": "tiny_ddpm"},
        "attribute": {"name": attribute},
        "edit": edit,
    }
    save_hfunction(payload(GlobalDirection((4, 2, 2)), info), path)
    return path


@pytest.fixture()
def folder(tmp_path):
    from asyrp.ops.io import atomic_write_png

    faces = tmp_path / "faces"
    for i, img in enumerate(images(3, size=32, seed=2)):
        atomic_write_png(img, faces / f"face_{i}.png")
    (faces / "broken.png").write_bytes(b"not a png")
    (faces / "face_0.jpg").write_bytes((faces / "face_0.png").read_bytes())  # same stem: a name of its own
    return faces


@pytest.fixture()
def no_backbone(monkeypatch):
    import asyrp.backbones as backbones

    monkeypatch.setattr(backbones, "load_backbone", lambda *a, **k: pytest.fail("a backbone was loaded"))


def _config(tmp_path, folder, files, *extra):
    from asyrp.config import compose

    return compose(
        "edit",
        ["arch=tiny_ddpm", f"checkpoint=[{','.join(map(str, files))}]", f"input_dir={folder}", *extra],
        output_dir=tmp_path / "run",
    )


def _request(cfg, files, **changes):
    """The request of ``cfg`` with ``changes`` made to its keys (one composition per test: Hydra is not quick)."""
    from omegaconf import OmegaConf

    from asyrp.tasks.edit_request import edit_request

    cfg = cfg.copy()
    for k, v in changes.items():
        OmegaConf.update(cfg, k, v)
    return edit_request(cfg, files)


def test_request_from_config_and_folder(tmp_path, folder, no_backbone):
    from asyrp.plan import EditPlan

    files = [
        _hfunction_file(tmp_path / "smiling.pt", t_edit=500, strength=0.8, attribute="smiling"),
        _hfunction_file(tmp_path / "young.pt", t_edit=500, strength=2.0, attribute="young"),
    ]
    cfg = _config(tmp_path, folder, files, "coeffs=[1,0.5]", "sweep=[0,1]", "seed=7")
    req = _request(cfg, files)
    # inputs: every usable file with its seed, the broken one skipped with its reason, one output name per file
    assert [(it["id"], it["seed"]) for it in req.inputs] == [
        ("face_0", 7),
        ("face_0_png", 8),
        ("face_1", 9),
        ("face_2", 10),
    ]
    assert [p.name for p, _ in req.skipped] == ["broken.png"] and req.skipped[0][1]
    assert req.out_names("face_1") == ["face_1_00.png", "face_1_01.png"]
    # the plan as stored in the files (nothing given on the command line), one interval for both
    assert req.plan == EditPlan(n_inv=6, n_gen=6, t0=999, t_edit=500, t_boost=0) and req.windows is None
    # coefficients: coeffs x the strength stored in each file x the sweep
    assert torch.equal(req.coefficients.matrix, torch.tensor([[0.0, 0.0], [0.8, 1.0]], dtype=torch.float64))
    assert req.coefficients.labels == ["x0", "x1"] and req.names() == ["smiling", "young"]
    man = req.manifest(False, {"face_1": {"face_1_00.png": "d0", "face_1_01.png": "d1"}})
    assert man["fingerprint"] == req.fingerprint and [it["done"] for it in man["inputs"]] == [False, False, True, False]
    assert man["inputs"][2]["digests"] == {"face_1_00.png": "d0", "face_1_01.png": "d1"}  # what a rerun checks
    assert "digests" not in man["inputs"][0]
    # the fingerprint: the same request gives the same one; another strength, plan or file another
    assert _request(cfg, files).fingerprint == req.fingerprint and len(req.fingerprint) == 24
    other_strength = _request(cfg, files, sweep=[0, 2])
    other_plan = _request(cfg, files, **{"plan.t_edit": 300})
    other_files = _request(cfg, files[::-1])
    assert other_plan.plan.t_edit == 300
    assert len({req.fingerprint, other_strength.fingerprint, other_plan.fingerprint, other_files.fingerprint}) == 4


def test_request_of_files_trained_on_different_intervals(tmp_path, folder, no_backbone):
    """A composition of files with different t_edit: one walk to the lowest, each function in its own window."""
    files = [
        _hfunction_file(tmp_path / "a.pt", t_edit=500, strength=1.0, attribute="a"),
        _hfunction_file(tmp_path / "b.pt", t_edit=200, strength=1.0, attribute="b"),
    ]
    req = _request(_config(tmp_path, folder, files, "n_images=2"), files)
    assert [it["id"] for it in req.inputs] == ["face_0", "face_0_png"] and len(req.skipped) == 3
    assert (req.plan.t0, req.plan.t_edit) == (999, 200)
    assert [(w["t_edit"], w["path"]) for w in req.windows] == [(500, str(files[0])), (200, str(files[1]))]
    assert req.record["intervals"] == [{k: w[k] for k in ("t0", "t_edit", "step_scale")} for w in req.windows]
