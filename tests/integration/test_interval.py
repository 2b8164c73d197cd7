"""Editing interval: choosing t_edit / t_boost on curves, measuring the curves, distances, configs, the script."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import images, tiny_backbone
from omegaconf import OmegaConf

from asyrp.interval import (
    IntervalCurves,
    LPIPSDistance,
    LPIPSWeightsMissing,
    NoCrossingError,
    RMSEDistance,
    choose_t_boost,
    choose_t_edit,
    measure_curves,
    resolve_interval,
    thresholds_for,
)
from asyrp.schedules import alphas_cumprod, make_betas

ROOT = Path(__file__).resolve().parents[2]
A = alphas_cumprod(make_betas("linear"))


def _synthetic():
    ts = list(range(0, 1000, 100))  # 0, 100, ..., 900
    strength = [0.0, 0.05, 0.1, 0.2, 0.3, 0.33, 0.5, 0.6, 0.7, 0.8]  # reaches 0.33 exactly at t = 500
    deficiency = [0.0, 0.6, 1.0, 1.19, 1.2, 1.3, 1.3, 1.4, 1.4, 1.5]  # reaches 1.2 exactly at t = 400
    return IntervalCurves(t=ts, strength=strength, deficiency=deficiency, distance="lpips", n_images=3)


def test_choose_on_a_known_curve_including_equality():
    c = _synthetic()
    assert choose_t_edit(c, 0.33) == 500  # equality counts
    assert choose_t_edit(c, 0.3301) == 600
    assert choose_t_boost(c, 1.2) == 400
    assert choose_t_boost(c, 1.19) == 300
    # the text cosine scales the threshold: 0.33 * 0.5 = 0.165 -> first reached at t = 300
    assert choose_t_edit(c, 0.33, text_cosine=0.5) == 300
    # the scan goes up from t = 0 regardless of the input order; mappings and (ts, values) pairs work too
    assert choose_t_edit(dict(zip(reversed(c.t), reversed(c.strength))), 0.33) == 500
    assert choose_t_boost((c.t, c.deficiency), 1.2) == 400
    # non-monotone curve: the FIRST crossing wins
    assert choose_t_edit(([0, 1, 2, 3], [0.1, 0.5, 0.2, 0.9]), 0.4) == 1


def test_no_crossing_is_a_clear_error():
    c = _synthetic()
    with pytest.raises(NoCrossingError, match=r"never reaches 0\.9.*maximum is 0\.8 at t=900"):
        choose_t_edit(c, 0.9)
    with pytest.raises(ValueError, match="quality deficiency never reaches"):
        choose_t_boost(c, 2.0)
    with pytest.raises(NoCrossingError, match="no finite values"):
        choose_t_edit(([0, 1], [float("nan"), float("nan")]), 0.1)


def test_paper_configs_and_resolve():
    official = {
        "celeba_hq": (513, 167),
        "afhq_dog": (482, 167),
        "lsun_church": (396, 293),
        "lsun_bedroom": (384, 221),
        "metfaces": (396, 180),
    }
    for name, pair in official.items():
        cfg = OmegaConf.load(ROOT / "conf" / "plan" / f"{name}.yaml").interval
        assert cfg.source == "paper"
        assert resolve_interval(cfg) == pair
        assert thresholds_for(cfg, "lpips") == (0.33, 1.2)
    assert resolve_interval(OmegaConf.load(ROOT / "conf" / "plan" / "fixed.yaml").interval) == (500, 200)
    measured = OmegaConf.load(ROOT / "conf" / "plan" / "measured.yaml").interval
    with pytest.raises(ValueError, match="needs curves"):
        resolve_interval(measured)
    assert resolve_interval(measured, _synthetic()) == (500, 400)
    assert resolve_interval(measured, _synthetic(), text_cosine=0.5) == (300, 400)
    # thresholds are per distance: the offline distance has its own
    rmse = IntervalCurves(t=[0, 1, 2], strength=[0.1, 0.35, 0.4], deficiency=[0.1, 0.4, 0.5], distance="rmse")
    assert resolve_interval(measured, rmse) == (1, 2)


@torch.no_grad()
def test_measure_forward_curves_and_files(tmp_path):
    bb = tiny_backbone(0)
    x0 = images(3)
    ts = [0, 100, 250, 500, 750, 999]
    c = measure_curves(bb, x0, a=A, distance=RMSEDistance(), ts=ts, seed=1, batch_size=2)
    assert c.t == ts and c.n_images == 3 and c.distance == "rmse" and c.process == "forward"
    # quality deficiency: x_t = x at t = 0 (a_0 ~ 1) and grows with the noise level
    assert c.deficiency[0] < 0.02
    assert all(b > a for a, b in zip(c.deficiency, c.deficiency[1:]))
    # forward-process x_t uses one fixed draw per image: batch size does not change the curves, the seed does
    c1 = measure_curves(bb, x0, a=A, distance=RMSEDistance(), ts=ts, seed=1, batch_size=3)
    assert torch.allclose(torch.tensor(c.strength), torch.tensor(c1.strength), atol=1e-5)
    assert torch.allclose(torch.tensor(c.deficiency), torch.tensor(c1.deficiency), atol=1e-6)
    c2 = measure_curves(bb, x0, a=A, distance=RMSEDistance(), ts=ts, seed=2)
    assert c2.deficiency != c.deficiency
    # CSV round trip and a PNG plot
    back = IntervalCurves.load_csv(c.save_csv(tmp_path / "curves.csv"))
    assert back.t == c.t and back.distance == "rmse" and back.n_images == 3
    assert torch.allclose(torch.tensor(back.strength), torch.tensor(c.strength), rtol=1e-5)
    png = c.plot(tmp_path / "curves.png", t_edit=500, t_boost=100, edit_threshold=0.35, boost_threshold=0.5)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@torch.no_grad()
def test_measure_along_the_inversion_files_P_t_under_its_own_t():
    """With process='inversion' the value at t is d(x, P_t(x_t)) computed from the network call AT t."""
    bb = tiny_backbone(0)
    x0 = images(2)
    ts = [0, 250, 500]
    c = measure_curves(bb, x0, a=A, distance=RMSEDistance(), ts=ts, process="inversion")
    assert c.deficiency[0] == 0.0  # the walk starts at x itself
    from asyrp.ddim import P_t, ddim_walk

    x250 = ddim_walk(bb, x0, [(0, 250)], A)
    P250 = P_t(x250, bb.eps(bb(x250, 250)), A[250])
    d = RMSEDistance()
    assert abs(c.strength[1] - d(x0, P250).mean().item()) < 1e-5
    assert abs(c.deficiency[1] - d(x0, x250).mean().item()) < 1e-5


def test_lpips_without_weights_fails_once_without_downloading(tmp_path, monkeypatch):
    def no_network(*a, **k):
        raise AssertionError("a download was attempted")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", no_network)
    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    with pytest.raises(LPIPSWeightsMissing, match="alexnet.*not found.*backbone_weights"):
        LPIPSDistance("alex")
    with pytest.raises(LPIPSWeightsMissing, match="not found"):
        LPIPSDistance("alex", backbone_weights=tmp_path / "missing.pth")


def test_lpips_with_local_weights(tmp_path, monkeypatch):
    """Any torchvision state dict on disk is used as is (here a random SqueezeNet, small enough for a test)."""
    import torchvision

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", lambda *a, **k: (_ for _ in ()).throw(AssertionError))
    torch.manual_seed(0)
    tv = torchvision.models.squeezenet1_1(weights=None)
    torch.save(tv.state_dict(), tmp_path / "squeeze.pth")
    d = LPIPSDistance("squeeze", backbone_weights=tmp_path / "squeeze.pth")
    x, y = images(2, size=32), images(2, size=32, seed=1)
    assert torch.equal(d(x, x), torch.zeros(2))
    dxy = d(x, y)
    assert dxy.shape == (2,) and (dxy > 0).all()
