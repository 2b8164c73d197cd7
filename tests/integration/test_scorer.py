"""asyrp.metrics.EditScorer: each metric equals its direct computation, absent networks are named, and every former
scoring path (the sweep, the experiment scripts, the synthfaces judge, direction labels, recipes.py) goes through it."""

from __future__ import annotations

import importlib.util
import math
from argparse import Namespace
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from omegaconf import OmegaConf
from torch import nn

from asyrp.metrics import EditScorer, FeatureFn, MetricAbsent, frechet_distance
from asyrp.metrics.scorer import METRICS

ROOT = Path(__file__).resolve().parents[2]
SOURCE, TARGET = ["a neutral face", "a frowning face"], ["a smiling face"]


class ToyClip:
    """A fixed linear image encoder and one seeded vector per text (the FrozenCLIP calls the scorer makes)."""

    def __init__(self):
        self.w = torch.randn(3 * 32 * 32, 8, generator=torch.Generator().manual_seed(0))

    def encode_image(self, x):
        return F.normalize(x.flatten(1).float() @ self.w, dim=-1)

    def text_embedding(self, texts):
        vs = [torch.randn(8, generator=torch.Generator().manual_seed(sum(map(ord, t)))) for t in texts]
        return F.normalize(torch.stack(vs).mean(0), dim=-1)

    def text_direction(self, source, target):
        return F.normalize(self.text_embedding(target) - self.text_embedding(source), dim=-1)


class ToyOracle(nn.Module):
    """Two heads read from the mean colour (the oracle calls: forward -> logits, judge, classes, embed, heads)."""

    classes = {"mouth": ["neutral", "smiling", "frowning"], "hat": ["False", "True"]}

    def __init__(self):
        super().__init__()
        self.features = nn.Linear(3, 3, bias=False)
        self.heads = nn.ModuleDict({k: nn.Linear(3, len(v)) for k, v in self.classes.items()})
        with torch.no_grad():  # mouth: smiling when red is high, frowning when low; hat: when blue is high
            self.features.weight.copy_(10 * torch.eye(3))
            self.heads["mouth"].weight.copy_(torch.tensor([[0.0, 0, 0], [1, 0.5, 0], [-1, 0, 0]]))
            self.heads["mouth"].bias.copy_(torch.tensor([0.5, 0, 0]))
            self.heads["hat"].weight.copy_(torch.tensor([[0.0, 0, 0], [0, 0, 1]]))
            self.heads["hat"].bias.zero_()

    def embed(self, x):
        return self.features(x.mean((2, 3)))

    def forward(self, x):
        z = self.embed(x)
        return {k: h(z) for k, h in self.heads.items()}

    @torch.no_grad()
    def judge(self, x):
        logits = self(x)
        out = {k: v.argmax(1) for k, v in logits.items()}
        out["confidence"] = torch.stack([v.softmax(1).amax(1) for v in logits.values()], 1).amin(1)
        return out


def _images(seed: int, n: int = 6) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return F.interpolate(low, size=32, mode="bilinear", align_corners=False).clamp(-1, 1).double().float()


@pytest.fixture(scope="module")
def toy():
    x_src = _images(0)
    x_edit = (0.6 * x_src + 0.4 * _images(1)).clamp(-1, 1)
    x_rec = (x_src + 0.05 * _images(2)).clamp(-1, 1)
    return Namespace(clip=ToyClip(), oracle=ToyOracle().eval(), x_src=x_src, x_edit=x_edit, x_rec=x_rec)


def _psnr(a, b):
    mse = (a.double() - b.double()).pow(2).flatten(1).mean(1)
    return float((10 * torch.log10(4.0 / mse)).mean())


def test_every_metric_equals_its_direct_computation(toy):
    from torchmetrics.functional.image import structural_similarity_index_measure as ssim

    l1 = {"distance": lambda a, b: (a - b).abs().flatten(1).mean(1)}
    feats = FeatureFn(lambda x: x.mean((2, 3)), 3)
    s = EditScorer(
        clip=toy.clip,
        source=SOURCE,
        target=TARGET,
        oracle=toy.oracle,
        oracle_target="mouth=smiling",
        lpips=l1,
        fid_features=feats,
        identity=lambda x: F.normalize(x.mean((2, 3)), dim=-1),
        face_parser=lambda x: (x[:, 0] > 0).long() + (x[:, 1] > 0).long(),
    )
    names = [
        "n",
        "clip_direction",
        "clip_text",
        "psnr",
        "ssim",
        "lpips",
        "psnr_rec",
        "ssim_rec",
        "lpips_rec",
        "oracle",
        "validity",
        "fid",
        "id",
        "sc",
    ]
    assert set(names) == set(METRICS)
    r = s.score(toy.x_src, toy.x_edit, names, x_rec=toy.x_rec, fid_real=toy.x_rec)
    src, edt, rec, c = toy.x_src, toy.x_edit, toy.x_rec, toy.clip
    assert r["n"] == 6.0
    d = F.normalize(c.encode_image(edt) - c.encode_image(src), dim=-1) @ c.text_direction(SOURCE, TARGET)
    assert r["clip_direction"] == pytest.approx(float(d.mean()), abs=1e-6)
    assert r["clip_text"] == pytest.approx(float((c.encode_image(edt) @ c.text_embedding(TARGET)).mean()), abs=1e-6)
    assert r["psnr"] == pytest.approx(_psnr(src, edt), rel=1e-6)
    assert r["psnr_rec"] == pytest.approx(_psnr(rec, edt), rel=1e-6)
    for key, ref in (("ssim", src), ("ssim_rec", rec)):
        direct = ssim(edt.double(), ref.double(), data_range=2.0, kernel_size=11, reduction="none")
        assert r[key] == pytest.approx(float(direct.mean()), rel=1e-9)
    assert r["lpips"] == pytest.approx(float((src - edt).abs().mean()), rel=1e-6)
    assert r["lpips_rec"] == pytest.approx(float((rec - edt).abs().mean()), rel=1e-6)
    js, je = toy.oracle.judge(src), toy.oracle.judge(edt)
    assert r["success"] == float((je["mouth"] == 1).double().mean())
    assert r["already_target"] == float((js["mouth"] == 1).double().mean())
    assert r["preserved"] == r["preserved/hat"] == float((je["hat"] == js["hat"]).double().mean())
    assert r["validity"] == pytest.approx(float(je["confidence"].mean()))
    fr, fe = feats(rec).double(), feats(edt).double()
    direct = frechet_distance(fr.mean(0), torch.cov(fr.T), fe.mean(0), torch.cov(fe.T))
    assert r["fid"] == pytest.approx(float(direct.clamp(min=0)), rel=1e-6, abs=1e-9)
    cos = (F.normalize(src.mean((2, 3)), dim=-1) * F.normalize(edt.mean((2, 3)), dim=-1)).sum(1)
    assert r["id"] == pytest.approx(float(cos.mean()), rel=1e-6)
    ls, le = ((x[:, 0] > 0).long() + (x[:, 1] > 0).long() for x in (src, edt))
    assert 0 < r["sc"] < 1 and r["sc"] == pytest.approx(float((ls == le).double().mean()), rel=1e-12)
    # the attribute score: the oracle's logit margin of the target, else CLIP target minus source similarity
    z = toy.oracle(edt)["mouth"].double()
    margin = z[:, 1] - torch.logsumexp(z[:, [0, 2]], 1)
    assert torch.allclose(s.attribute_score(edt), margin)
    e = c.encode_image(edt).double()
    clip_only = EditScorer(clip=c, source=SOURCE, target=TARGET)
    assert torch.allclose(
        clip_only.attribute_score(edt), e @ c.text_embedding(TARGET).double() - e @ c.text_embedding(SOURCE).double()
    )
    assert clip_only.attribute_score_name == "CLIP cos(target) - cos(source)"
    # a prefix names the keys, the order is the order asked
    assert list(s.score(src, edt, ["psnr", "n"], prefix="edit/")) == ["edit/psnr", "edit/n"]


def test_absent_networks_are_named_and_refused(toy):
    s = EditScorer(clip=toy.clip, source=SOURCE, target=TARGET)
    assert s.absent(["clip_direction", "psnr", "lpips_rec", "oracle", "validity"]) == {
        "lpips_rec": "no LPIPS weights (lpips: net, backbone_weights, lin_weights)",
        "oracle": "no attribute oracle",
        "validity": "no attribute oracle",
    }
    assert EditScorer(oracle=toy.oracle).absent(["oracle", "clip_text"]) == {
        "oracle": "no oracle_target for this attribute",
        "clip_text": "no CLIP model",
    }
    with pytest.raises(MetricAbsent, match="metric oracle: no attribute oracle"):
        s.score(toy.x_src, toy.x_edit, ["psnr", "oracle"])
    with pytest.raises(ValueError, match="unknown edit metric 'clip'"):
        s.absent(["clip"])
    with pytest.raises(ValueError, match="pass x_rec"):
        s.score(toy.x_src, toy.x_edit, ["psnr_rec"])


def _world(toy):
    from asyrp import experiment as E
    from asyrp.plan import EditPlan

    return E.Experiment(
        args=Namespace(smoke=True, quick=False, seed=0, clip="toy"),
        arch_cfg={},
        backbone=None,
        a=None,
        clip=toy.clip,
        oracle=toy.oracle,
        x=toy.x_src,
        image_source="",
        plan=EditPlan(n_inv=4, n_gen=4, t_edit=0, t_boost=0),
        size={},
        out=ROOT,
        attribute_prefix="synthfaces_",
    )


def test_sweep_row_and_experiment_world_agree_through_the_scorer(toy, monkeypatch):
    from asyrp.tasks.edit_quality import edit_scorer

    calls = []
    score = EditScorer.score
    monkeypatch.setattr(EditScorer, "score", lambda self, *a, **kw: calls.append(a[2]) or score(self, *a, **kw))
    cfg = OmegaConf.create(
        {
            "attribute": {"source": SOURCE, "target": TARGET, "oracle_target": "mouth=smiling"},
            "edit_quality": {"judge": "auto", "lpips": None},
        }
    )
    scorer, metrics = edit_scorer(cfg, toy.clip, toy.oracle)
    row = scorer.score(toy.x_src, toy.x_edit, metrics, x_rec=toy.x_src, prefix="edit/")
    w = _world(toy)
    assert w.attribute("smiling")["source"] == SOURCE  # the world reads the same attribute
    sc = w.score(toy.x_src, toy.x_edit, "smiling", fid_real=toy.x_rec)
    assert calls == [metrics, ["clip_direction", "clip_text", "psnr", "ssim", "oracle", "validity", "fid"]]
    assert sc["clip_dir"] == row["edit/clip_direction"] and sc["psnr"] == row["edit/psnr_rec"]
    assert (sc["success"], sc["preserved"]) == (row["edit/success"], row["edit/preserved"])
    assert torch.equal(w.attribute_score(toy.x_edit, "smiling"), scorer.attribute_score(toy.x_edit))
    assert w.score_name("smiling") == "oracle logit margin of mouth=smiling"
    # without an oracle the world's oracle columns say n/a (NaN) instead of inventing numbers
    w.oracle = None
    assert all(math.isnan(w.score(toy.x_src, toy.x_edit, "smiling")[k]) for k in ("success", "preserved", "validity"))
    # recipes.py reports the sweep's metrics (no LPIPS) through the same scorer
    spec = importlib.util.spec_from_file_location("recipes", ROOT / "experiments" / "recipes.py")
    recipes = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(recipes)
    assert recipes.SCORES == metrics and recipes.EditScorer is EditScorer


def test_judge_and_direction_labels_read_through_the_scorer(toy):
    from asyrp.directions import oracle_labels
    from asyrp.synthfaces.judge import judge_pairs

    target = "hat=True"
    r = judge_pairs(toy.oracle, toy.x_src, toy.x_edit, target)
    s = EditScorer(oracle=toy.oracle, oracle_target=target).score(toy.x_src, toy.x_edit, ["n", "oracle"])
    assert (r["n"], r["success"], r["preserved"], r["already_target_before"]) == (
        6,
        s["success"],
        s["preserved"],
        s["already_target"],
    )
    assert r["preserved_per_head"] == {"mouth": s["preserved/mouth"]}
    assert sum(p["success"] for p in r["per_image"]) / 6 == r["success"]

    lab = oracle_labels(toy.oracle, toy.x_rec, {0.0: toy.x_rec, 1.0: toy.x_edit})
    ch = EditScorer(oracle=toy.oracle).head_changes(toy.x_rec, toy.x_edit)
    ref, out = toy.oracle.judge(toy.x_rec), toy.oracle.judge(toy.x_edit)
    for h in ToyOracle.classes:
        flips = float((out[h] != ref[h]).float().mean())
        assert lab["strengths"]["1"]["flips"][h] == ch[h]["flips"] == flips
        assert lab["flip_rate"][h] == flips
    assert lab["label"] == "mouth=neutral (+)"
    assert lab["before"]["mouth"] == pytest.approx({"neutral": 0.0, "smiling": 1 / 6, "frowning": 5 / 6})
