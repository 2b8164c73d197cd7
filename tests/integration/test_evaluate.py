"""evaluate.py's task: rows of real edit runs (tiny nets) equal their metrics computed directly on the same files,
a rerun gives the same rows, and bad input is refused in one line with nothing written."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from helpers import images, tiny_hfunction_file

from asyrp import build
from asyrp.config import compose
from asyrp.data.images import read_image_files
from asyrp.ops.errors import AsyrpUserError
from asyrp.ops.io import atomic_write_png, file_digest
from asyrp.tasks.edit import edit
from asyrp.tasks.evaluate import evaluate

SOURCE, TARGET = ["face"], ["smiling face"]  # conf/attribute/smiling (the file stores only the name)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("evaluate")
    tiny_hfunction_file(d, attribute="smiling")
    faces = d / "faces"
    faces.mkdir()
    for i, img in enumerate(images(4, size=32, seed=3)):
        atomic_write_png(img, faces / f"face_{i}.png")
    out = {}
    for name, extra in {"a": ["sweep=[0,1]"], "b": ["sweep=[0,0.5]", "n_images=3"]}.items():
        cfg = compose(
            "edit",
            ["arch=tiny_ddpm", f"checkpoint={d / 'hf.pt'}", f"input_dir={faces}", "batch_size=4", *extra],
            output_dir=d / f"edit_{name}",
        )
        out[name] = Path(edit(cfg)["output_dir"])
    return out


def eval_cfg(tmp_path, runs, metrics, *extra):
    return compose(
        "evaluate",
        [f"runs=[{','.join(map(str, runs))}]", f"metrics=[{','.join(metrics)}]", "clip=tiny", *extra],
        output_dir=tmp_path / "eval",
    )


def lpips_file(tmp_path) -> Path:
    """Seeded squeezenet ImageNet-layout weights: LPIPS loads the user's file, whatever its values."""
    import torchvision

    torch.manual_seed(0)
    path = tmp_path / "squeeze.pth"
    torch.save(torchvision.models.squeezenet1_1(weights=None).state_dict(), path)
    return path


def test_rows_equal_direct_computation_and_rerun(runs, tmp_path):
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    from asyrp.metrics import FrechetDistance, LPIPSDistance, clip_features

    metrics = ["clip_direction", "clip_text", "psnr", "ssim", "lpips", "psnr_rec", "ssim_rec", "lpips_rec", "fid"]
    lp = lpips_file(tmp_path)
    over = [f"scorer.lpips={{net: squeeze, backbone_weights: {lp}}}"]
    res = evaluate(eval_cfg(tmp_path, [runs["a"]], metrics, *over))
    rows = res["rows"]
    assert [(r["attribute"], r["strength"]) for r in rows] == [("smiling", 0.0), ("smiling", 1.0)]
    man = json.loads((runs["a"] / "manifest.json").read_text())
    src = read_image_files([it["source"] for it in man["inputs"]], 32)
    rec = read_image_files([runs["a"] / it["outputs"][0] for it in man["inputs"]], 32)
    clip = build.clip(compose("evaluate", ["runs=x", "clip=tiny"]).clip)
    direction = F.normalize(clip.text_embedding(TARGET) - clip.text_embedding(SOURCE), dim=-1)
    lpips = LPIPSDistance("squeeze", backbone_weights=lp)
    for k, r in enumerate(rows):
        edt = read_image_files([runs["a"] / it["outputs"][k] for it in man["inputs"]], 32)
        e_src, e_edt = clip.encode_image(src), clip.encode_image(edt)
        assert r["clip_direction"] == pytest.approx(
            float((F.normalize(e_edt - e_src, dim=-1) @ direction).mean()), abs=1e-5
        )
        assert r["clip_text"] == pytest.approx(
            float((F.normalize(e_edt, dim=-1) @ clip.text_embedding(TARGET)).mean()), abs=1e-5
        )
        for ref, suffix in ((src, ""), (rec, "_rec")):
            mse = ((edt.double() - ref.double()) ** 2).flatten(1).mean(1)
            assert r["psnr" + suffix] == pytest.approx(float((10 * torch.log10(4 / mse)).mean()), rel=1e-6)
            want = ssim(edt.double(), ref.double(), data_range=2.0, kernel_size=11, reduction="none").mean()
            assert r["ssim" + suffix] == pytest.approx(float(want), rel=1e-6)
            assert r["lpips" + suffix] == pytest.approx(float(lpips(ref, edt).mean()), rel=1e-5)
        fid = FrechetDistance(clip_features(clip))
        fid.update(src, real=True)
        fid.update(edt, real=False)
        assert r["fid"] == pytest.approx(float(fid.compute()), rel=1e-5)
        # what was scored: every file by name and content digest, and the settings
        assert [i["edit_digest"] for i in r["images"]] == [
            file_digest(runs["a"] / it["outputs"][k]) for it in man["inputs"]
        ]
        assert r["plan"].startswith("n_inv=4 n_gen=4 t0=999 t_edit=500 t_boost=200")
        assert r["clip_model"] == "tiny:random" and r["hfunction_digest"] == man["checkpoints"][0]["digest"]
    assert rows[0]["psnr_rec"] == float("inf")  # strength 0 is the reconstruction itself
    md = Path(res["markdown"]).read_text()
    assert "All rows score the same 4 source images" in md
    with open(res["csv"]) as fh:
        table = list(csv.DictReader(fh))
    assert len(json.loads(table[1]["images"])) == 4 and table[1]["source_set"] == rows[1]["source_set"]
    again = evaluate(eval_cfg(tmp_path / "again", [runs["a"]], metrics, *over))  # a rerun: the same rows
    assert [json.dumps(r, sort_keys=True) for r in again["rows"]] == [json.dumps(r, sort_keys=True) for r in rows]


def test_mixed_image_sets_are_said_and_wandb_gets_the_table(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    res = evaluate(eval_cfg(tmp_path, [runs["a"], runs["b"]], ["psnr"], f"wandb={{dir: {tmp_path}}}"))
    assert [r["n"] for r in res["rows"]] == [4, 4, 3, 3]
    assert "**Rows score different image sets** (2 source sets" in Path(res["markdown"]).read_text()
    assert list((tmp_path / "wandb").glob("offline-run-*/run-*.wandb"))


@pytest.mark.parametrize(
    "case, match",
    [
        ("no_manifest", "has no manifest.json: give the output_dir of an edit.py run"),
        ("no_weights", "lpips: no LPIPS weights .* or drop them from metrics"),
        ("unknown", "metrics: nope not known to this version's EditScorer"),
        ("face_on_other", "id judge faces, and .* edited tiny_ddpm images"),
        ("face_size", "id crops faces from 256x256 images and .* holds 32x32 ones"),
        ("no_parser", "sc: face parser weights not found at .*none.pth .*scorer.face_parser"),
        ("no_rec", "psnr_rec compare edits with the reconstruction, and .* has no strength-0 output"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(runs, tmp_path, monkeypatch, case, match):
    from asyrp.metrics import scorer

    monkeypatch.setitem(scorer.METRICS, "id", "id: a face metric")  # as the identity network registers it
    folder, metrics, extra = runs["a"], ["psnr"], []
    if case == "no_manifest":
        folder = tmp_path / "empty"
        folder.mkdir()
    elif case == "no_weights":
        metrics = ["psnr", "lpips"]
    elif case == "unknown":
        metrics = ["nope"]
    elif case in ("face_on_other", "face_size"):
        metrics = ["id"]
        extra = ["face_archs=[tiny_ddpm]"] if case == "face_size" else []
    elif case == "no_parser":
        metrics, extra = ["sc"], ["face_archs=[tiny_ddpm]", f"scorer.face_parser={tmp_path / 'none.pth'}"]
    elif case == "no_rec":
        man = json.loads((runs["a"] / "manifest.json").read_text())
        folder = tmp_path / "no_rec"
        folder.mkdir()
        man["coefficients"], man["labels"] = man["coefficients"][1:], man["labels"][1:]
        for it in man["inputs"]:
            it["outputs"] = it["outputs"][1:]
            (folder / it["outputs"][0]).write_bytes((runs["a"] / it["outputs"][0]).read_bytes())
        (folder / "manifest.json").write_text(json.dumps(man))
        metrics = ["psnr_rec"]
    with pytest.raises(AsyrpUserError, match=match) as err:
        evaluate(eval_cfg(tmp_path, [folder], metrics, *extra))
    assert "\n" not in str(err.value)
    assert not list((tmp_path / "eval").glob("evaluation*"))


def test_a_failure_while_scoring_leaves_no_table(runs, tmp_path, monkeypatch):
    from asyrp.tasks import evaluate as task

    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    real = task.score_run
    monkeypatch.setattr(task, "score_run", fail_on_second)
    with pytest.raises(KeyboardInterrupt):
        evaluate(eval_cfg(tmp_path, [runs["a"], runs["b"]], ["psnr"]))
    assert not list((tmp_path / "eval").glob("evaluation*"))


def test_fid_on_inception_features_from_the_users_file(runs, tmp_path, monkeypatch):
    import torchvision

    from asyrp.metrics import FeatureFn, FrechetDistance, inception_features
    from asyrp.metrics import scorer as scorer_module

    torch.manual_seed(0)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception.pth"
    torch.save(net.state_dict(), path)
    x = images(2, size=32, seed=5)
    net.fc = torch.nn.Identity()
    mean, std = (
        torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1),
        torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    )
    with torch.no_grad():  # the user's file, strictly: the same features as the network it holds
        direct = net.eval()(((F.interpolate(x, size=299, mode="bilinear") + 1) / 2 - mean) / std)
        assert torch.allclose(inception_features(path)(x), direct, atol=1e-4)
    # evaluate.py builds FID on them from scorer.inception (a cheap stand-in for the 299-px network here)
    loaded = []
    cheap = lambda p: loaded.append(p) or FeatureFn(lambda x: x.flatten(1)[:, :6].double(), 6, "stand-in")  # noqa: E731
    monkeypatch.setattr(scorer_module, "inception_features", cheap)
    res = evaluate(eval_cfg(tmp_path, [runs["a"]], ["fid"], f"scorer.inception={path}"))
    man = json.loads((runs["a"] / "manifest.json").read_text())
    src = read_image_files([it["source"] for it in man["inputs"]], 32)
    edt = read_image_files([runs["a"] / it["outputs"][1] for it in man["inputs"]], 32)
    fid = FrechetDistance(cheap(path))
    fid.update(src, real=True)
    fid.update(edt, real=False)
    assert res["rows"][1]["fid"] == pytest.approx(float(fid.compute()), rel=1e-6) and loaded[0] == str(path)
    assert res["rows"][1]["fid_features"].startswith("inception (inception.pth")
    with pytest.raises(AsyrpUserError, match="fid: no Inception weights at .*absent.pth"):
        evaluate(eval_cfg(tmp_path / "b", [runs["a"]], ["fid"], f"scorer.inception={tmp_path / 'absent.pth'}"))
