"""asyrp.metrics: real outcomes on known inputs, and DDP merging equal to one pass."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from helpers import images

from asyrp.metrics import (
    CLIPTextSimilarity,
    DirectionalCLIPSimilarity,
    FeatureFn,
    FrechetDistance,
    LPIPSPreservation,
    OracleEditScore,
    PSNRPreservation,
    SegmentationConsistency,
    SSIMPreservation,
    frechet_distance,
)


def _encoder(dim: int = 8, seed: int = 0):
    """A fixed random linear image encoder (a stand-in for CLIP's)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(3 * 16 * 16, dim, generator=g)
    return lambda x: x.flatten(1).float() @ w


def _feature_net(dim: int = 6):
    enc = _encoder(dim, seed=1)
    return FeatureFn(enc, dim)


def test_identical_images_preservation_is_perfect():
    x = images(4)
    psnr, ssim = PSNRPreservation(), SSIMPreservation()
    psnr.update(x, x.clone())
    ssim.update(x, x.clone())
    assert math.isinf(float(psnr.compute())) and float(psnr.compute()) > 0
    assert float(ssim.compute()) == pytest.approx(1.0, abs=1e-9)
    seg = SegmentationConsistency(lambda z: (z[:, 0] > 0).long())
    seg.update(x, x.clone())
    assert float(seg.compute()) == pytest.approx(1.0)


def test_psnr_ssim_values_on_known_noise():
    x = images(3)
    y = x + 0.1  # RMSE 0.1 on a data range of 2: PSNR = 20 log10(2 / 0.1) = 26.02 dB
    psnr, ssim = PSNRPreservation(), SSIMPreservation()
    psnr.update(x, y)
    ssim.update(x, y + torch.randn_like(y) * 0.3)
    assert float(psnr.compute()) == pytest.approx(20 * math.log10(20), abs=1e-4)
    assert 0 < float(ssim.compute()) < 0.9


def test_segmentation_consistency_partial_overlap():
    a = torch.zeros(1, 4, 4, dtype=torch.long)
    b = a.clone()
    b[0, :2] = 1  # class 0: IoU 8/16, class 1: IoU 0/8; 8 of 16 pixels keep their label
    x_a, x_b = a[:, None].float().expand(1, 3, 4, 4), b[:, None].float().expand(1, 3, 4, 4)
    miou, acc = (SegmentationConsistency(lambda z: z[:, 0].long(), measure=m) for m in ("miou", "pixel_accuracy"))
    miou.update(x_a, x_b)
    acc.update(x_a, x_b)
    assert float(miou.compute()) == pytest.approx((0.5 + 0.0) / 2)
    assert float(acc.compute()) == pytest.approx(8 / 16)
    ignoring = SegmentationConsistency(lambda z: z[:, 0].long(), ignore_index=1)
    ignoring.update(x_b, x_a)  # source b: its 8 pixels of class 1 are skipped, the other 8 agree
    assert float(ignoring.compute()) == pytest.approx(1.0)


def test_directional_similarity_sign_flips_and_matches_direction():
    enc = _encoder()
    x_src, x_edit = images(5, seed=0), images(5, seed=1)
    direction = torch.randn(8)
    m1, m2 = DirectionalCLIPSimilarity(enc, direction), DirectionalCLIPSimilarity(enc, direction)
    m1.update(x_src, x_edit)
    m2.update(x_edit, x_src)
    assert float(m1.compute()) == pytest.approx(-float(m2.compute()), abs=1e-9)
    assert float(m1.compute()) != 0
    # an edit that moves exactly along the text direction scores 1
    along = DirectionalCLIPSimilarity(lambda x: x.flatten(1)[:, :8], direction)
    src = torch.zeros(2, 3, 16, 16)
    edt = src.clone()
    edt.view(2, -1)[:, :8] = direction * 0.3
    along.update(src, edt)
    assert float(along.compute()) == pytest.approx(1.0, abs=1e-6)


def test_clip_text_similarity_is_cosine():
    text = torch.tensor([1.0, 0.0, 0.0])
    m = CLIPTextSimilarity(lambda x: x.flatten(1)[:, :3], text)
    x = torch.zeros(2, 3, 4, 4)
    x.view(2, -1)[0, :3] = torch.tensor([2.0, 0.0, 0.0])  # cos 1
    x.view(2, -1)[1, :3] = torch.tensor([0.0, 1.0, 0.0])  # cos 0
    m.update(x)
    assert float(m.compute()) == pytest.approx(0.5)


def test_fid_of_a_set_with_itself_is_zero_and_shift_is_positive():
    feats = _feature_net()
    x = images(64, seed=3)
    fid = FrechetDistance(feats)
    fid.update(x, real=True)
    fid.update(x, real=False)
    assert abs(float(fid.compute())) < 1e-6
    fid2 = FrechetDistance(feats)
    fid2.update(x, real=True)
    fid2.update(x + 0.5, real=False)
    shifted = float(fid2.compute())
    mu_shift = float((feats(x + 0.5).double().mean(0) - feats(x).double().mean(0)).pow(2).sum())
    assert shifted == pytest.approx(mu_shift, rel=1e-6)  # a pure shift moves the mean only
    assert shifted > 0.1


def test_fid_matches_closed_form_for_gaussians():
    mu1, mu2 = torch.zeros(3), torch.ones(3)
    c1, c2 = torch.eye(3), 4 * torch.eye(3)
    # |mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr(sqrt(C1 C2)) = 3 + 3 + 12 - 2 * 6
    assert float(frechet_distance(mu1, c1, mu2, c2)) == pytest.approx(6.0)


def test_fid_needs_a_feature_network():
    with pytest.raises(ValueError, match="feature network"):
        FrechetDistance()


def _fake_judge(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """'mouth' from the mean of channel 0, 'hat' from channel 1, 'glasses' from channel 2 (signs)."""
    m = x.flatten(2).mean(-1)
    return {
        "mouth": (m[:, 0] > 0).long(),
        "hat": (m[:, 1] > 0).long(),
        "glasses": (m[:, 2] > 0).long(),
        "confidence": torch.ones(x.shape[0]),
    }


def test_oracle_score_success_and_preservation():
    classes = {"mouth": ["neutral", "smiling"], "hat": [False, True], "glasses": [False, True]}
    src = -torch.ones(4, 3, 4, 4)
    edt = src.clone()
    edt[:3, 0] = 1  # three of four now "smile"
    edt[0, 1] = 1  # the first also gained a hat: not preserved
    m = OracleEditScore(_fake_judge, "mouth=smiling", classes=classes)
    m.update(src, edt)
    out = m.compute()
    assert float(out["success"]) == pytest.approx(0.75)
    assert float(out["preserved"]) == pytest.approx(0.75)
    assert float(out["preserved/hat"]) == pytest.approx(0.75)
    assert float(out["preserved/glasses"]) == pytest.approx(1.0)
    same = OracleEditScore(_fake_judge, "mouth=smiling", classes=classes)
    same.update(src, src.clone())
    assert float(same.compute()["preserved"]) == 1.0 and float(same.compute()["success"]) == 0.0
    # the removal of an attribute (a reversed edit): 'mouth!=smiling' succeeds where the mouth stops smiling
    smiling = edt.clone()
    back = smiling.clone()
    back[1, 0] = -1  # of the three smiling faces, one is reverted; the fourth never smiled
    rev = OracleEditScore(_fake_judge, "mouth!=smiling", classes=classes)
    rev.update(smiling, back)
    out = rev.compute()
    assert float(out["success"]) == pytest.approx(0.5) and float(out["already_target"]) == pytest.approx(0.25)
    assert float(out["preserved"]) == 1.0


def test_oracle_score_with_synthfaces_oracle_on_identical_images():
    pytest.importorskip("safetensors")
    from asyrp.synthfaces.oracle import DEFAULT_DIR, load_oracle

    if not (DEFAULT_DIR / "oracle.safetensors").is_file():
        pytest.skip("synthfaces oracle not built")
    oracle = load_oracle()
    x = images(4, size=32)
    m = OracleEditScore.from_oracle(oracle, "mouth=smiling")
    m.update(x, x.clone())
    assert float(m.compute()["preserved"]) == 1.0


def test_lpips_missing_weights_is_a_clear_error(tmp_path):
    from asyrp.metrics import LPIPSWeightsMissing

    with pytest.raises(LPIPSWeightsMissing, match="not found"):
        LPIPSPreservation(backbone_weights=tmp_path / "absent.pth")


def test_lpips_with_injected_distance():
    m = LPIPSPreservation(lambda a, b: (a - b).abs().flatten(1).mean(1))
    x = images(3)
    m.update(x, x + 0.25)
    assert float(m.compute()) == pytest.approx(0.25, abs=1e-6)


def _all_metrics():
    enc = _encoder()
    return {
        "dir": (DirectionalCLIPSimilarity(enc, torch.randn(8, generator=torch.Generator().manual_seed(5))), "pair"),
        "text": (CLIPTextSimilarity(enc, torch.randn(8, generator=torch.Generator().manual_seed(6))), "edit"),
        "psnr": (PSNRPreservation(), "pair"),
        "ssim": (SSIMPreservation(), "pair"),
        "seg": (SegmentationConsistency(lambda z: (z[:, 0] > 0).long() + (z[:, 1] > 0).long()), "pair"),
        "oracle": (
            OracleEditScore(
                _fake_judge,
                "mouth=smiling",
                classes={"mouth": ["neutral", "smiling"], "hat": [0, 1], "glasses": [0, 1]},
            ),
            "pair",
        ),
        "fid": (FrechetDistance(_feature_net()), "fid"),
    }


def _feed(metric, kind, src, edt):
    if kind == "pair":
        metric.update(src, edt)
    elif kind == "edit":
        metric.update(edt)
    else:
        metric.update(src, real=True)
        metric.update(edt, real=False)


def _value(v):
    return {k: float(x) for k, x in v.items()} if isinstance(v, dict) else float(v)


def test_merging_two_states_equals_one_pass():
    """What DDP's sync does (every state reduced by its dist_reduce_fx): rank 0 saw 5 images, rank 1 saw 7."""
    src = images(12, seed=7)
    edt = (src + 0.4 * images(12, seed=8)).clamp(-1, 1)
    for name, (one, kind) in _all_metrics().items():
        r0, r1 = copy.deepcopy(one), copy.deepcopy(one)
        _feed(one, kind, src, edt)
        _feed(r0, kind, src[:5], edt[:5])
        _feed(r1, kind, src[5:], edt[5:])
        r0.merge_state(r1)
        a, b = _value(one.compute()), _value(r0.compute())
        if isinstance(a, dict):
            assert a.keys() == b.keys()
            for k in a:
                assert a[k] == pytest.approx(b[k], rel=1e-9, abs=1e-9), (name, k)
        else:
            assert a == pytest.approx(b, rel=1e-7, abs=1e-9), name


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import os

    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.set_num_threads(1)
    src = images(12, seed=7)
    edt = (src + 0.4 * images(12, seed=8)).clamp(-1, 1)
    lo, hi = (0, 5) if rank == 0 else (5, 12)
    values = {}
    for name, (m, kind) in _all_metrics().items():
        _feed(m, kind, src[lo:hi], edt[lo:hi])
        values[name] = _value(m.compute())  # compute() syncs the states across the two processes
    if rank == 0:
        torch.save(values, out)
    dist.destroy_process_group()


@pytest.mark.slow
def test_two_gloo_processes_equal_one_pass(tmp_path):
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = tmp_path / "values.pt"
    mp.spawn(_ddp_worker, args=(2, port, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=False)
    src = images(12, seed=7)
    edt = (src + 0.4 * images(12, seed=8)).clamp(-1, 1)
    for name, (m, kind) in _all_metrics().items():
        _feed(m, kind, src, edt)
        want = _value(m.compute())
        if isinstance(want, dict):
            for k in want:
                assert got[name][k] == pytest.approx(want[k], rel=1e-9, abs=1e-9), (name, k)
        else:
            assert got[name] == pytest.approx(want, rel=1e-7, abs=1e-9), name
