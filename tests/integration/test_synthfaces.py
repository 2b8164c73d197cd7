"""The shipped synthfaces world: deterministic renders whose attributes show, and models that do their jobs."""

from pathlib import Path

import numpy as np
import pytest
import torch

from asyrp.synthfaces import render, render_array, sample_face
from asyrp.synthfaces.judge import judge_pairs, parse_target
from asyrp.synthfaces.oracle import labels_tensor, load_oracle, to_tensor

ROOT = Path(__file__).resolve().parents[2]
ASSETS = ROOT / "assets" / "synthfaces"


def test_renders_are_deterministic_and_attributes_show():
    a, fa = render_array(3, 10, 4)
    b, fb = render_array(3, 10, 4)
    assert np.array_equal(a, b) and fa == fb
    face = sample_face(3, 0).replace(glasses=False, hat=False, dx=0.0, dy=0.0, scale=1.0)
    px = {m: np.asarray(render(face.replace(mouth=m)), dtype=np.int16) for m in ("smiling", "neutral", "frowning")}
    # the mouth differs in the lower middle of the face, and only there
    lower = (slice(18, 28), slice(10, 22))
    assert np.abs(px["smiling"] - px["neutral"])[lower].sum() > 1000
    assert np.abs(px["smiling"] - px["frowning"])[lower].sum() > 1000
    assert np.abs(px["smiling"] - px["neutral"])[:14].sum() == 0
    glasses = np.asarray(render(face.replace(glasses=True)), dtype=np.int16) - px[face.mouth]
    assert np.abs(glasses)[10:18].sum() > 1000


def test_captions_name_the_attributes():
    f = sample_face(0, 0).replace(mouth="smiling", hair_colour="red", hair_length="long", glasses=True, hat=False)
    assert f.caption() == "a smiling face with long red hair with glasses"


def test_oracle_reads_fresh_faces():
    oracle = load_oracle(ASSETS / "oracle")
    arr, faces = render_array(11, 0, 200)
    pred = oracle.judge(to_tensor(arr))
    truth = labels_tensor(faces)
    for key, y in truth.items():
        assert (pred[key] == y).float().mean() >= 0.95, key


def test_judge_counts_success_and_preservation():
    oracle = load_oracle(ASSETS / "oracle")
    faces = [sample_face(12, i).replace(mouth="neutral") for i in range(8)]
    src = to_tensor(np.stack([np.asarray(render(f)) for f in faces]))
    smiling = [f.replace(mouth="smiling") for f in faces[:6]] + [f.replace(hat=not f.hat) for f in faces[6:]]
    edt = to_tensor(np.stack([np.asarray(render(f)) for f in smiling]))
    res = judge_pairs(oracle, src, edt, "mouth=smiling")
    assert res["success"] == pytest.approx(6 / 8)
    assert res["preserved"] == pytest.approx(6 / 8)
    assert parse_target("glasses=True") == ("glasses", 1)


def test_shipped_ddpm_predicts_noise():
    from omegaconf import OmegaConf

    from asyrp.backbones import load_backbone
    from asyrp.schedules import alphas_cumprod, make_betas

    arch = OmegaConf.load(ROOT / "conf" / "arch" / "synthfaces.yaml")
    bb = load_backbone(arch.family, OmegaConf.to_container(arch.config), ASSETS / "ddpm")
    assert tuple(bb.h_shape) == (64, 8, 8)
    a = alphas_cumprod(make_betas("linear")).float()
    x0 = to_tensor(render_array(13, 0, 16)[0])
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(x0.shape, generator=g)
    t = torch.full((16,), 300)
    at = a[t].view(-1, 1, 1, 1)
    with torch.no_grad():
        eps = bb.eps(bb(at.sqrt() * x0 + (1 - at).sqrt() * noise, t))
    mse = float(((eps - noise) ** 2).mean())
    assert mse < 0.1  # predicting zero would score 1.0


def test_shipped_clip_reads_mouths_offline():
    from omegaconf import OmegaConf

    from asyrp.clip import load_clip
    from asyrp.synthfaces.clip import zero_shot_accuracy

    cfg = OmegaConf.load(ROOT / "conf" / "clip" / "synthfaces.yaml")
    clip = load_clip(OmegaConf.to_container(cfg, resolve=True))
    acc = zero_shot_accuracy(clip, seed=14, n=200)
    assert acc["mouth"] >= 0.9


def test_folder_writer(tmp_path):
    import json
    from dataclasses import asdict

    from PIL import Image

    from asyrp.synthfaces.data import write_split

    folder = write_split(tmp_path / "f", seed=5, n=3, exclude={"mouth": "smiling"})
    attrs = json.loads((folder / "attributes.json").read_text())
    # the first file is the first face of dataset 5 that does not smile, rendered, with its attributes recorded
    first = next(f for f in (sample_face(5, i) for i in range(50)) if f.mouth != "smiling")
    assert {k: v for k, v in attrs["face_0000.png"].items() if k != "caption"} == json.loads(json.dumps(asdict(first)))
    assert np.array_equal(np.asarray(Image.open(folder / "face_0000.png")), np.asarray(render(first, 32)))
    assert sorted(attrs) == ["face_0000.png", "face_0001.png", "face_0002.png"]
    assert all(v["mouth"] != "smiling" and v["caption"].startswith("a ") for v in attrs.values())


def test_sampler_runs_from_noise():
    from omegaconf import OmegaConf

    from asyrp.backbones import load_backbone
    from asyrp.schedules import alphas_cumprod, make_betas
    from asyrp.synthfaces.ddpm import sample

    arch = OmegaConf.load(ROOT / "conf" / "arch" / "synthfaces.yaml")
    bb = load_backbone(arch.family, OmegaConf.to_container(arch.config), ASSETS / "ddpm")
    a = alphas_cumprod(make_betas("linear")).float()
    x = sample(bb, a, 2, steps=3, seed=1)
    assert x.shape == (2, 3, 32, 32) and torch.isfinite(x).all() and float(x.abs().max()) <= 1
    assert torch.equal(x, sample(bb, a, 2, steps=3, seed=1))


def test_ddpm_warm_start_continues_the_shipped_weights(tmp_path):
    """The resumable state is not committed: --init-from continues from the exported EMA at its recorded step."""
    import json

    from safetensors.torch import load_file

    from asyrp.synthfaces.ddpm import train_ddpm

    shipped = ASSETS / "ddpm"
    step0 = json.loads((shipped / "training.json").read_text())["step"]
    out = train_ddpm(
        tmp_path / "ddpm",
        tmp_path / "work",
        steps=step0 + 2,
        batch_size=2,
        n_images=8,
        threads=1,
        init_from=shipped,
        export_every_min=1e9,
        save_every_min=1e9,
    )
    meta = json.loads((out / "training.json").read_text())
    assert meta["step"] == step0 + 2 and meta["warm_start_from_step"] == step0
    a, b = (
        load_file(shipped / "diffusion_pytorch_model.safetensors"),
        load_file(out / "diffusion_pytorch_model.safetensors"),
    )
    assert a.keys() == b.keys()
    diff = max((a[k] - b[k]).abs().max().item() for k in a)
    assert 0 < diff < 1e-3  # trained two tiny warm-up steps on top of the shipped weights, not from scratch
    out = train_ddpm(
        tmp_path / "ddpm",
        tmp_path / "work",
        steps=step0 + 3,
        batch_size=2,
        n_images=8,
        threads=1,
        resume=True,
        export_every_min=1e9,
        save_every_min=1e9,
    )
    meta = json.loads((out / "training.json").read_text())
    assert meta["step"] == step0 + 3 and meta["warm_start_from_step"] == step0  # a resume keeps the lineage
