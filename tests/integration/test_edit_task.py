"""edit.py: a trained hfunction.pt (or its official-layout export) edits a folder; bad inputs fail cleanly."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import images
from PIL import Image

from asyrp.config import compose
from asyrp.grid import grid_layout
from asyrp.hfunctions import load_official_hfunction
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.io import atomic_write_png
from asyrp.tasks.edit import edit
from asyrp.tasks.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("train")
    cfg = compose(
        "train",
        [
            "debug=smoke",
            "~logger",
            f"dataset.cache_dir={out / 'cache'}",
            "callbacks.edit_grid=null",
            "trainer.limit_val_batches=0",
        ],
        output_dir=out,
    )
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
    return compose(
        "edit",
        ["arch=tiny_ddpm", f"checkpoint={checkpoint}", f"input_dir={input_dir}", "batch_size=2", *extra],
        output_dir=tmp_path / "run",
    )


def test_edit_with_our_checkpoint_and_official_export(trained, faces, tmp_path):
    res = edit(edit_cfg(tmp_path, trained / "hfunction.pt", faces))
    out = tmp_path / "run" / "edited"
    assert sorted(p.name for p in out.iterdir()) == [
        "face_0.png",
        "face_1.png",
        "face_2.png",
        "grid.png",
        "manifest.json",
    ]
    assert res["t_edit"] == 500 and res["n_gen"] == 4  # taken from the checkpoint
    # the official layout holds the same weights
    official = load_official_hfunction(trained / "hfunction_official.pth")
    ours = torch.load(trained / "hfunction.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(official.state_dict()[k], v) for k, v in ours.items())
    res2 = edit(
        edit_cfg(
            tmp_path,
            trained / "hfunction_official.pth",
            faces,
            "output_dir=" + str(tmp_path / "o2"),
            "plan.n_inv=4",
            "plan.n_gen=4",
            "plan.t_edit=500",
            "plan.t_boost=200",
        )
    )
    for name in ("face_0.png", "face_1.png"):
        assert (tmp_path / "o2" / name).read_bytes() == (out / name).read_bytes()
    assert res2["t_edit"] == 500


def test_missing_checkpoint_and_unusable_images(trained, faces, tmp_path):
    with pytest.raises(AsyrpUserError, match="h-function checkpoint not found"):
        edit(edit_cfg(tmp_path, tmp_path / "nope.pt", faces))
    assert not (tmp_path / "run" / "edited").exists()
    (faces / "face_1.png").write_bytes(b"garbage")  # skipped with its reason, the others are edited
    res = edit(edit_cfg(tmp_path, trained / "hfunction.pt", faces))
    man = json.loads((tmp_path / "run" / "edited" / "manifest.json").read_text())
    assert res["edited"] == 2 and [i["id"] for i in man["inputs"]] == ["face_0", "face_2"]
    assert man["skipped"] == [{"path": str(faces / "face_1.png"), "reason": "not an image (Pillow cannot identify it)"}]
    for f in faces.iterdir():
        f.write_bytes(b"")
    with pytest.raises(AsyrpUserError, match="none of the 3 files"):  # nothing usable: one error, no output
        edit(edit_cfg(tmp_path / "b", trained / "hfunction.pt", faces))
    assert not (tmp_path / "b" / "run" / "edited").exists()


def test_composition_sweep_and_strip_share_one_inversion(trained, faces, tmp_path, monkeypatch):
    import asyrp.samplers as samplers

    calls = []
    real = samplers.ddim_invert
    monkeypatch.setattr(
        samplers, "ddim_invert", lambda bb, x0, *a, **k: calls.append(x0.shape[0]) or real(bb, x0, *a, **k)
    )
    ours, official = trained / "hfunction.pt", trained / "hfunction_official.pth"
    # a sweep of 3 strengths over 3 images in batches of 2: 2 inversions (one per batch), 9 outputs
    res = edit(edit_cfg(tmp_path, ours, faces, "sweep=[0,0.5,1]", f"output_dir={tmp_path / 'sweep'}"))
    assert calls == [2, 1] and len(res["written"]) == 9
    man = json.loads((tmp_path / "sweep" / "manifest.json").read_text())
    assert man["coefficients"] == [[0.0], [0.5], [1.0]] and man["inputs"][0]["outputs"] == [
        "face_0_00.png",
        "face_0_01.png",
        "face_0_02.png",
    ]
    # the strength-1 column is the single edit (same seeds, same inversion): equal up to round-off
    single = edit(edit_cfg(tmp_path, ours, faces, f"output_dir={tmp_path / 'single'}"))
    assert single["edited"] == 3
    a = np.asarray(Image.open(tmp_path / "sweep" / "face_0_02.png"), dtype=np.int16)
    b = np.asarray(Image.open(tmp_path / "single" / "face_0.png"), dtype=np.int16)
    assert np.abs(a - b).max() <= 2
    # a composition of two h-functions (ours + the official export of the same weights) with coefficients,
    # as an interpolation strip of 3 steps from (1, 0) to (0, 1): every column has total strength 1
    calls.clear()
    res = edit(
        edit_cfg(
            tmp_path,
            f"[{ours},{official}]",
            faces,
            "coeffs=[0,1]",
            "strip=3",
            "strip_from=[1,0]",
            f"output_dir={tmp_path / 'comp'}",
        )
    )
    assert calls == [2, 1] and res["coefficients"] == [[1.0, 0.0], [0.5, 0.5], [0.0, 1.0]]
    a = np.asarray(Image.open(tmp_path / "comp" / "face_1_00.png"), dtype=np.int16)
    c = np.asarray(Image.open(tmp_path / "comp" / "face_1_02.png"), dtype=np.int16)
    assert np.abs(a - c).max() <= 2  # the two functions are the same weights
    lay = grid_layout(tmp_path / "comp" / "grid.png")  # rows: 3 images; columns: input + 3 settings, 32 px x4
    assert (lay["rows"], lay["columns"], lay["cell"]) == (3, 4, [128, 128]) and lay["row_labels"] == [
        "face_0",
        "face_1",
        "face_2",
    ]
    assert lay["column_labels"][0] == "input" and all("(strip " in c for c in lay["column_labels"][1:])


def test_composition_keeps_each_function_in_its_own_interval(trained, faces, tmp_path):
    """Files trained on different intervals compose with one walk from the highest t0 down to the lowest t_edit, each
    function acting only in its own [t0, t_edit] (at its trained effect per unit of t); a function alone in a
    composition edits as it does alone."""
    from asyrp.hfunctions import save_hfunction

    p = torch.load(trained / "hfunction.pt", weights_only=True)
    assert (p["edit"]["t0"], p["edit"]["t_edit"], p["edit"]["n_gen"]) == (999, 500, 4)
    low = tmp_path / "low.pt"  # the same weights, trained (say) on [999, 200]
    save_hfunction({**p, "edit": {**p["edit"], "t_edit": 200}}, low)
    res = edit(
        edit_cfg(
            tmp_path, f"[{trained / 'hfunction.pt'},{low}]", faces, "coeffs=[1,0]", f"output_dir={tmp_path / 'comp'}"
        )
    )
    man = json.loads((tmp_path / "comp" / "manifest.json").read_text())
    assert (res["t_edit"], man["t0"], man["n_gen"]) == (200, 999, 4)
    assert [(w["t0"], w["t_edit"], w["step_scale"]) for w in man["intervals"]] == [(999, 500, 1.0), (999, 200, 1.0)]
    alone = edit(edit_cfg(tmp_path, trained / "hfunction.pt", faces, f"output_dir={tmp_path / 'alone'}"))
    assert alone["t_edit"] == 500
    for name in ("face_0.png", "face_2.png"):  # the first function acts at t 999 and 666 in both runs
        a = np.asarray(Image.open(tmp_path / "comp" / name), dtype=np.int16)
        b = np.asarray(Image.open(tmp_path / "alone" / name), dtype=np.int16)
        assert np.abs(a - b).max() <= 2
    # inside the run: the composed functions are zero outside their own intervals (t 333: only the low one acts)
    from asyrp.tasks.edit import EditLoop
    from asyrp.tasks.edit_request import edit_request

    req = edit_request(
        edit_cfg(tmp_path, f"[{trained / 'hfunction.pt'},{low}]", faces, f"output_dir={tmp_path / 'j'}"),
        [trained / "hfunction.pt", low],
    )
    job = EditLoop(req, tmp_path / "j")
    job.load_networks()
    x = torch.randn(2, 3, 32, 32)
    for t, active in ((999, [True, True]), (666, [True, True]), (333, [False, True])):
        enc = job.backbone.encode(x, torch.full((2,), t))
        comp = job.hfunc.components(enc.h, enc.emb, torch.full((2,), t))
        assert [bool(torch.count_nonzero(c)) for c in comp] == active, t
    # another t0: the walk starts at the highest and takes the steps the densest function needs
    high = tmp_path / "high.pt"
    save_hfunction({**p, "edit": {**p["edit"], "t0": 666, "t_edit": 300}}, high)
    edit(edit_cfg(tmp_path, f"[{trained / 'hfunction.pt'},{high}]", faces, f"output_dir={tmp_path / 'mix'}"))
    man = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    assert (man["t0"], man["t_edit"], man["n_gen"], man["n_inv"]) == (999, 300, 6, 6)
    assert [round(w["step_scale"], 3) for w in man["intervals"]] == [round(4 / 6, 3), 1.0]
    # t0 / t_edit given on the command line: one interval for all, as before
    res = edit(
        edit_cfg(
            tmp_path, f"[{trained / 'hfunction.pt'},{low}]", faces, "plan.t_edit=500", f"output_dir={tmp_path / 'one'}"
        )
    )
    assert res["t_edit"] == 500 and "intervals" not in json.loads((tmp_path / "one" / "manifest.json").read_text())


def test_editor_composes_files_of_different_intervals_like_edit_py(trained, faces, tmp_path):
    """The interactive editor resolves a composition as edit.py does: one walk from the highest t0, each function in
    its own interval at its trained effect per unit of t; same image out (to PNG rounding)."""
    from asyrp.data.images import load_image
    from asyrp.editor import load_editor
    from asyrp.hfunctions import save_hfunction

    p = torch.load(trained / "hfunction.pt", weights_only=True)
    high = tmp_path / "high.pt"
    save_hfunction({**p, "edit": {**p["edit"], "t0": 666, "t_edit": 300}}, high)
    files = [trained / "hfunction.pt", high]
    edit(edit_cfg(tmp_path, f"[{files[0]},{files[1]}]", faces, "coeffs=[1,1]", f"output_dir={tmp_path / 'mix'}"))
    cfg = edit_cfg(tmp_path, files[0], faces)
    ed = load_editor(cfg.arch, files, {})
    s = ed.plan
    assert (s.t0, s.t_edit, s.n_gen, s.n_inv) == (999, 300, 6, 6)
    assert [round(v, 3) for v in ed.scales] == [round(4 / 6, 3), 1.0]
    x = ed.generate(ed.invert(load_image(faces / "face_0.png", 32)), [[1.0, 1.0]])[0]
    got = ((x.clamp(-1, 1) + 1) * 127.5).round().permute(1, 2, 0).numpy().astype(np.int16)
    want = np.asarray(Image.open(tmp_path / "mix" / "face_0.png"), dtype=np.int16)
    assert np.abs(got - want).max() <= 2
    # t_edit given: one interval for all, as in edit.py
    one = load_editor(cfg.arch, files, {"t_edit": 500})
    assert (one.plan.t0, one.plan.t_edit, one.scales) == (999, 500, [1.0, 1.0])


def test_random_samples(trained, tmp_path):
    res = edit(
        compose(
            "edit",
            [
                "arch=tiny_ddpm",
                f"checkpoint={trained / 'hfunction.pt'}",
                "n_random=3",
                "batch_size=3",
                "progress=false",
            ],
            output_dir=tmp_path / "run",
        )
    )
    out = tmp_path / "run" / "edited"
    assert res["edited"] == 3
    assert sorted(p.name for p in out.glob("sample_*.png")) == sorted(
        f"sample_{i:05d}{s}.png" for i in range(3) for s in ("", "_input")
    )
    man = json.loads((out / "manifest.json").read_text())
    assert [i["source"] for i in man["inputs"]] == ["random"] * 3 and [i["seed"] for i in man["inputs"]] == [0, 1, 2]


def test_checkpoint_for_another_backbone_is_refused(trained, faces, tmp_path):
    payload = torch.load(trained / "hfunction.pt", weights_only=True)
    assert payload["hfunction"]["layout"] == "ddpm"  # "auto" resolved when saved
    payload["h_shape"] = [512, 8, 8]  # as if trained on a 256px model
    torch.save(payload, tmp_path / "other.pt")
    with pytest.raises(AsyrpUserError, match="pass arch=tiny_ddpm"):
        edit(edit_cfg(tmp_path, tmp_path / "other.pt", faces))


def test_spacing_is_one_grid_for_cache_training_and_edit(faces, tmp_path):
    """plan.spacing=uniform: the inversion cache, the training steps and edit (from the checkpoint) use one grid."""
    from asyrp.plan import EditPlan

    out = tmp_path / "train"
    cfg = compose(
        "train",
        [
            "debug=smoke",
            "~logger",
            f"dataset.cache_dir={tmp_path / 'cache'}",
            "plan.spacing=uniform",
            "callbacks.edit_grid=null",
            "trainer.limit_val_batches=0",
        ],
        output_dir=out,
    )
    _, objects = train(cfg)
    m = cfg.plan
    plan = EditPlan(n_inv=m.n_inv, n_gen=m.n_gen, t0=m.t0, t_edit=m.t_edit, spacing="uniform")
    assert plan.seq_gen != EditPlan(n_gen=m.n_gen, t0=m.t0).seq_gen  # the grids really differ
    assert objects["module"].train_steps == plan.edit_steps()
    assert objects["datamodule"].cache.plan.seq_inv == plan.seq_inv
    assert objects["datamodule"].train_set[0]["t"].tolist() == [t for t, _ in plan.generation()]
    ckpt = out / "checkpoints" / "hfunction.pt"
    assert torch.load(ckpt, weights_only=True)["edit"]["spacing"] == "uniform"
    edit(edit_cfg(tmp_path, ckpt, faces, "output_dir=" + str(tmp_path / "u")))
    assert json.loads((tmp_path / "u" / "manifest.json").read_text())["spacing"] == "uniform"
    edit(edit_cfg(tmp_path, ckpt, faces, "output_dir=" + str(tmp_path / "o"), "plan.spacing=official"))
    assert "spacing" not in json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert (tmp_path / "u" / "face_0.png").read_bytes() != (tmp_path / "o" / "face_0.png").read_bytes()


@pytest.mark.parametrize("space, mode", [("eps", "eps_shift"), ("x", "x_shift")])
def test_image_space_direction_trains_through_train_and_edits_from_its_file(space, mode, faces, tmp_path, monkeypatch):
    """conf/hfunction/eps_shift | x_shift: the paper's image-space baselines train through train(cfg) in their mode
    (the shift added to eps, with the time embedding at hand, or to x_t before the network runs), only at the
    editing steps, and their hfunction.pt reloads and edits through edit.py in that mode."""
    import asyrp.samplers as samplers
    from asyrp.hfunctions import GlobalDirection, load_hfunction_checkpoint

    seen = []
    real = samplers.apply_hfunction

    def spy(hfunc, h, emb=None, t=None, coeffs=1.0):
        seen.append((tuple(h.shape[1:]), emb is None))
        return real(hfunc, h, emb, t, coeffs)

    monkeypatch.setattr(samplers, "apply_hfunction", spy)
    out = tmp_path / "train"
    base = [
        "debug=smoke",
        "~logger",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        "callbacks.edit_grid=null",
        "trainer.limit_val_batches=0",
        f"hfunction={mode}",
        "hfunction.n_steps=4",
    ]
    with pytest.raises(AsyrpUserError, match=f"set plan.mode={mode}"):
        train(compose("train", base, output_dir=tmp_path / "wrong"))
    _, objects = train(
        compose(
            "train",
            [*base, f"plan.mode={mode}", "model.optimizer._target_=torch.optim.Adam", "model.optimizer.lr=0.05"],
            output_dir=out,
        )
    )
    g = objects["module"].hfunc
    assert isinstance(g, GlobalDirection) and g.shape == (3, 32, 32)  # the tiny backbone's images, not h
    assert seen and set(seen) == {((3, 32, 32), mode == "x_shift")}  # x_shift: applied before the network runs
    # trained at the editing steps (999, 666 >= t_edit 500) only; the others keep their zero start
    moved = g.delta_h.detach().flatten(1).norm(dim=1)
    assert g.timesteps.tolist() == [0, 333, 666, 999] and moved[:2].tolist() == [0.0, 0.0] and (moved[2:] > 0).all()

    ckpt = out / "checkpoints" / "hfunction.pt"
    stored = torch.load(ckpt, weights_only=True)
    assert stored["hfunction"]["space"] == space and stored["edit"]["mode"] == mode
    back, _ = load_hfunction_checkpoint(ckpt, objects["backbone"], "tiny_ddpm")
    assert all(torch.equal(back.state_dict()[k], v.cpu()) for k, v in g.state_dict().items())
    edit(edit_cfg(tmp_path, ckpt, faces, "output_dir=" + str(tmp_path / "e")))
    assert json.loads((tmp_path / "e" / "manifest.json").read_text())["mode"] == mode  # from the file
    edit(edit_cfg(tmp_path, ckpt, faces, "output_dir=" + str(tmp_path / "r"), "strength=0"))
    assert (tmp_path / "e" / "face_0.png").read_bytes() != (tmp_path / "r" / "face_0.png").read_bytes()
    with pytest.raises(AsyrpUserError, match=f"set plan.mode={mode}"):
        edit(edit_cfg(tmp_path, ckpt, faces, "output_dir=" + str(tmp_path / "w"), "plan.mode=asyrp"))


def test_the_p_t_hold_travels_from_training_to_edit_py(faces, tmp_path):
    """plan.hold given to train.py is stored in hfunction.pt and applied by edit.py (recorded in its manifest);
    plan.hold=0 switches it off there; a bad value is one error before any output."""
    run = tmp_path / "train"
    cfg = compose(
        "train",
        ["debug=smoke", "~logger", f"dataset.cache_dir={run / 'cache'}", "callbacks.edit_grid=null",
         "trainer.limit_val_batches=0", "plan.hold=0.3", "plan.hold_dilate=1", "model.edit_strength=3"],
        output_dir=run,
    )  # fmt: skip
    train(cfg)
    ckpt = run / "checkpoints" / "hfunction.pt"
    stored = torch.load(ckpt, weights_only=True)["edit"]
    assert (stored["hold"], stored["hold_dilate"]) == (0.3, 1)
    edit(edit_cfg(tmp_path, ckpt, faces, f"output_dir={tmp_path / 'held'}"))
    edit(edit_cfg(tmp_path, ckpt, faces, f"output_dir={tmp_path / 'free'}", "plan.hold=0"))
    held, free = (json.loads((tmp_path / d / "manifest.json").read_text()) for d in ("held", "free"))
    assert (held["hold"], held["hold_dilate"]) == (0.3, 1) and "hold" not in free
    assert (tmp_path / "held" / "face_0.png").read_bytes() != (tmp_path / "free" / "face_0.png").read_bytes()
    with pytest.raises(AsyrpUserError, match=r"plan\.hold=2 must be in \[0, 1\)"):
        edit(edit_cfg(tmp_path, ckpt, faces, f"output_dir={tmp_path / 'bad'}", "plan.hold=2"))
    assert not (tmp_path / "bad").exists()


def _mask_folder(folder: Path, names, size: int, rows: slice) -> Path:
    folder.mkdir(parents=True)
    for n in names:
        m = np.zeros((size, size), np.uint8)
        m[rows] = 255
        Image.fromarray(m, mode="L").save(folder / f"{n}.png")
    return folder


def test_masks_hold_the_edit_inside_each_images_mask(trained, faces, tmp_path):
    """masks=: P_t^edit only inside each image's mask, so outside it the edit stays nearer the reconstruction than
    the free edit; one folder per checkpoint in a composition; every bad mask setting is one error before output."""
    from asyrp.data.images import read_image_files

    ckpt, names = trained / "hfunction.pt", [f"face_{i}" for i in range(3)]
    top = _mask_folder(tmp_path / "top", names, 32, slice(0, 12))
    bottom = _mask_folder(tmp_path / "bottom", names, 32, slice(20, 32))
    runs = {"free": [], "masked": [f"masks={top}"], "rec": ["strength=0"]}
    for name, extra in runs.items():
        edit(edit_cfg(tmp_path, ckpt, faces, f"output_dir={tmp_path / name}", *extra))
    x = {k: read_image_files([tmp_path / k / f"{n}.png" for n in names], 32) for k in runs}
    man = json.loads((tmp_path / "masked" / "manifest.json").read_text())
    assert man["masks"]["folders"] == [str(top)] and man["inputs"][0]["masks"] == [str(top / "face_0.png")]
    outside = (slice(None), slice(None), slice(16, 32))  # rows far from the mask (the walk below t_edit spreads)
    d_masked = (x["masked"] - x["rec"])[outside].abs().mean()
    d_free = (x["free"] - x["rec"])[outside].abs().mean()
    assert d_masked < 0.5 * d_free and (x["masked"] - x["rec"]).abs().amax() > 0
    # a composition of two functions, each held to its own folder's masks
    edit(edit_cfg(tmp_path, f"[{ckpt},{ckpt}]", faces, f"output_dir={tmp_path / 'comp'}", f"masks=[{top},{bottom}]"))
    assert (tmp_path / "comp" / "face_2.png").is_file()
    small = _mask_folder(tmp_path / "small", names, 16, slice(0, 8))
    partial = _mask_folder(tmp_path / "partial", names[:2], 32, slice(0, 8))
    for extra, match in [
        ([f"masks=[{top},{bottom}]"], "lists 2 folders for 1 checkpoints"),
        ([f"masks={tmp_path / 'none'}"], "does not exist"),
        ([f"masks={partial}"], "no mask for 1 of the 3 inputs"),
        ([f"masks={small}"], "16x16 but the images are 32x32"),
    ]:
        with pytest.raises(AsyrpUserError, match=match):
            edit(edit_cfg(tmp_path, ckpt, faces, f"output_dir={tmp_path / 'bad'}", *extra))
        assert not (tmp_path / "bad").exists()
