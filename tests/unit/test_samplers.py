"""Asyrp samplers: the asymmetric step, its baselines, the edit loop, its cost and its noise handling."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from helpers import images, tiny_backbone
from torch import nn

from asyrp.ddim import ddim_generate, ddim_invert, ddim_walk
from asyrp.hfunctions import Composition, DeltaBlock, GlobalDirection
from asyrp.plan import EditPlan
from asyrp.samplers import asyrp_step, edit, edit_eps
from asyrp.schedules import alphas_cumprod, make_betas, timesteps

A = alphas_cumprod(make_betas("linear"))


@pytest.fixture(scope="module")
def bb():
    return tiny_backbone(0)


@pytest.fixture(scope="module")
def bb64():
    """float64 twin for whole-trajectory comparisons (see helpers.tiny_backbone)."""
    return tiny_backbone(0, dtype=torch.float64)


def _block(bb, seed=1, **kw):
    torch.manual_seed(seed)
    p = next(bb.parameters())
    return DeltaBlock("ddpm", bb.h_channels, bb.emb_dim, **kw).to(p.dtype).eval()


def _direction(bb, scale, seed=2):
    torch.manual_seed(seed)
    return GlobalDirection(bb.h_shape, init_std=scale)


def _cos(u, v):
    return torch.nn.functional.cosine_similarity(u.flatten(), v.flatten(), dim=0).item()


# -- one step ---------------------------------------------------------------------------------------------------
@torch.no_grad()
@pytest.mark.parametrize("hfunc_kind", ["zero_direction", "zero_init_block"])
def test_zero_delta_h_is_exactly_the_ddim_step(bb, hfunc_kind):
    x = torch.randn(3, 3, 16, 16)
    hf = GlobalDirection(bb.h_shape, init_std=0.0) if hfunc_kind == "zero_direction" else _block(bb, zero_init=True)
    for t, t_next in [(999, 973), (513, 487), (25, 0), (0, -1)]:
        res = asyrp_step(bb, x, t, t_next, A, hf)
        ref = ddim_walk(bb, x, [(t, t_next)], A)
        assert torch.count_nonzero(res.delta_h) == 0
        assert (res.x_next - ref).abs().max().item() < 1e-6
        assert (res.P_edit - res.P_orig).abs().max().item() < 1e-6


@torch.no_grad()
def test_batched_decode_equals_two_separate_decodes(bb):
    x = torch.randn(2, 3, 16, 16)
    enc = bb.encode(x, 600)
    h2 = enc.h + _direction(bb, 0.5)(enc.h)
    both = bb.decode(enc, torch.cat([enc.h, h2]))
    assert both.shape[0] == 4
    assert (both[:2] - bb.decode(enc)).abs().max().item() < 1e-5
    assert (both[2:] - bb.decode(enc, h2)).abs().max().item() < 1e-5
    # and edit_eps splits it the right way round: eps (D_t) from h, eps_edit (P_t) from h + delta_h
    ee = edit_eps(bb, x, 600, _direction(bb, 0.5))
    assert (ee.eps - bb.eps(bb.decode(enc))).abs().max().item() < 1e-5
    assert (ee.eps_edit - bb.eps(bb.decode(enc, h2))).abs().max().item() < 1e-5


@torch.no_grad()
def test_symmetric_differs_and_moves_less_than_asymmetric(bb):
    """Same eps_edit in both, but the symmetric step also shifts D_t, which partly cancels the change of P_t."""
    x = torch.randn(2, 3, 16, 16)
    hf = _direction(bb, 0.3)
    ref = ddim_walk(bb, x, [(713, 570)], A)
    asy = asyrp_step(bb, x, 713, 570, A, hf, mode="asyrp")
    sym = asyrp_step(bb, x, 713, 570, A, hf, mode="symmetric")
    assert (asy.x_next - sym.x_next).abs().max().item() > 1e-3
    assert torch.allclose(asy.P_edit, sym.P_edit, atol=1e-5)  # identical edited prediction
    assert (sym.x_next - ref).norm() < 0.9 * (asy.x_next - ref).norm()
    assert sym.P_orig is None and asy.P_orig is not None


@torch.no_grad()
def test_negative_strength_moves_opposite(bb):
    x = torch.randn(2, 3, 16, 16)
    hf = _direction(bb, 0.02)  # small shift: the response is close to linear
    plus = asyrp_step(bb, x, 856, 713, A, hf, strength=1.0)
    minus = asyrp_step(bb, x, 856, 713, A, hf, strength=-1.0)
    assert torch.equal(plus.P_orig, minus.P_orig)
    assert _cos(plus.P_edit - plus.P_orig, minus.P_edit - minus.P_orig) < -0.95
    assert torch.allclose(minus.delta_h, -plus.delta_h)


def test_edit_eps_is_differentiable_wrt_the_hfunction_only(bb):
    hf = _block(bb)
    x = torch.randn(2, 3, 16, 16)
    res = asyrp_step(bb, x, 800, 700, A, hf)
    loss = (res.P_edit - res.P_orig.detach()).abs().mean()
    loss.backward()
    grads = [p.grad for p in hf.parameters()]
    assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)
    assert all(p.grad is None for p in bb.parameters())


@torch.no_grad()
def test_baseline_modes(bb):
    x = torch.randn(2, 3, 16, 16)
    img_dir = GlobalDirection((3, 16, 16), init_std=0.1)
    ref = ddim_walk(bb, x, [(700, 600)], A)
    # eps_shift: eps_edit = eps + delta in P_t only; D_t keeps eps
    es = edit_eps(bb, x, 700, img_dir, mode="eps_shift", strength=2.0)
    assert torch.allclose(es.eps_edit - es.eps, 2.0 * img_dir.delta_h.expand(2, -1, -1, -1), atol=1e-6)
    assert torch.allclose(es.eps, bb.eps(bb(x, 700)), atol=1e-5)
    # x_shift: a plain DDIM step from the shifted latent
    xs = asyrp_step(bb, x, 700, 600, A, img_dir, mode="x_shift")
    assert torch.allclose(xs.x_next, ddim_walk(bb, x + img_dir.delta_h, [(700, 600)], A), atol=1e-5)
    assert (xs.x_next - ref).abs().max() > 1e-3
    with pytest.raises(ValueError, match="unknown mode"):
        edit_eps(bb, x, 700, img_dir, mode="nope")


# -- the edit loop ------------------------------------------------------------------------------------------------
PLAN = EditPlan(n_inv=6, n_gen=8, t_edit=500, t_boost=200)
KW = dict(a=A, plan=PLAN)


@torch.no_grad()
def test_strength_zero_is_the_plain_reconstruction_exactly(bb):
    x0 = images(2)
    x_T = ddim_invert(bb, x0, timesteps(6), A)
    x_rec = ddim_generate(bb, x_T, timesteps(8), A)
    hf = _block(bb)
    for kw in (dict(hfunc=hf, strength=0.0), dict(hfunc=None)):
        res = edit(bb, x0, kw.pop("hfunc"), a=A, plan=replace(PLAN, t_boost=0), **kw)
        assert torch.equal(res.x_T, x_T)
        assert torch.equal(res.x_edit, x_rec)
    # with quality boosting the reconstruction is the same call without an edit, same seeds
    a = edit(bb, x0, hf, **KW, strength=0.0, seeds=[3, 4])
    b = edit(bb, x0, None, a=A, plan=replace(PLAN, t_edit=None), seeds=[3, 4])
    assert torch.equal(a.x_edit, b.x_edit)
    assert not torch.equal(a.x_edit, x_rec)  # boosting did inject noise
    # and a real edit changes the output
    assert (edit(bb, x0, hf, **KW, seeds=[3, 4]).x_edit - a.x_edit).abs().max() > 1e-3


@torch.no_grad()
def test_per_image_seeds_make_results_independent_of_the_batch(bb64):
    bb = bb64
    xa, xb = images(2, seed=5, dtype=torch.float64).chunk(2)
    hf = _block(bb)
    kw = dict(a=A, plan=replace(PLAN, t_boost=600))  # several stochastic steps (eta = 1), some inside the edit interval
    pair = edit(bb, torch.cat([xa, xb]), hf, **kw, seeds=[11, 22]).x_edit
    alone = edit(bb, xb, hf, **kw, seeds=[22]).x_edit
    swapped = edit(bb, torch.cat([xb, xa]), hf, **kw, seeds=[22, 11]).x_edit
    assert (pair[1] - alone[0]).abs().max().item() < 1e-9
    assert (swapped[0] - alone[0]).abs().max().item() < 1e-9
    other_seed = edit(bb, xb, hf, **kw, seeds=[23]).x_edit
    assert (other_seed - alone).abs().max().item() > 1e-3
    with pytest.raises(ValueError, match="one seed per image"):
        edit(bb, xb, hf, **kw, seeds=[1, 2])


@torch.no_grad()
def test_composition_in_edit_equals_the_summed_function(bb64):
    bb = bb64
    x0 = images(2, seed=7, dtype=torch.float64)
    f1, f2 = _block(bb, seed=1), _block(bb, seed=2)

    class Summed(nn.Module):
        def forward(self, h, emb=None, t=None):
            return 0.7 * f1(h, emb, t) - 0.4 * f2(h, emb, t)

    comp = edit(bb, x0, Composition([f1, f2]), **KW, strength=[0.7, -0.4], seeds=[1, 2]).x_edit
    ref = edit(bb, x0, Summed(), **KW, seeds=[1, 2]).x_edit
    assert comp.shape == x0.shape
    assert (comp - ref).abs().max().item() < 1e-9


@torch.no_grad()
def test_batched_interpolation_equals_the_loop(bb64):
    bb = bb64
    x0 = images(2, seed=8, dtype=torch.float64)
    f1, f2 = _block(bb, seed=1), _block(bb, seed=2)
    C = torch.tensor([[1.0, 0.0], [0.5, 0.5], [-1.0, 1.0]])
    batched = edit(bb, x0, Composition([f1, f2]), **KW, strength=C, seeds=[5, 6]).x_edit
    assert batched.shape == (3, *x0.shape)
    for k in range(3):
        single = edit(bb, x0, Composition([f1, f2]), **KW, strength=C[k].tolist(), seeds=[5, 6]).x_edit
        assert (batched[k] - single).abs().max().item() < 1e-9
    # a single function with a list of strengths
    ss = [-1.0, 0.5, 2.0]
    batched = edit(bb, x0, f1, **KW, strength=ss, seeds=[5, 6]).x_edit
    for k, s in enumerate(ss):
        assert (batched[k] - edit(bb, x0, f1, **KW, strength=s, seeds=[5, 6]).x_edit).abs().max().item() < 1e-9


# -- the cost ------------------------------------------------------------------------------------------------------
class _Counter:
    """Wraps backbone.encode / decode / forward on the instance, recording calls and decoder batch sizes."""

    def __init__(self, bb):
        self.bb, self.calls, self.decode_rows = bb, {"forward": 0, "encode": 0, "decode": 0}, []
        self._orig = {name: getattr(bb, name) for name in self.calls}

        def wrap(name):
            orig = self._orig[name]

            def f(*args, **kw):
                self.calls[name] += 1
                if name == "decode":
                    enc = args[0]
                    h = args[1] if len(args) > 1 else kw.get("h")
                    self.decode_rows.append((h if h is not None else enc.h).shape[0])
                return orig(*args, **kw)

            return f

        for name in self.calls:
            setattr(bb, name, wrap(name))

    def restore(self):
        for name in self.calls:
            delattr(self.bb, name)


@pytest.mark.parametrize("K", [1, 3])
def test_an_edit_costs_exactly_the_floor(K):
    bb = tiny_backbone(0)
    B, n_inv, n_gen, t_edit, t_boost = 2, 6, 8, 500, 200
    seq = timesteps(n_gen)
    n_edit = sum(t >= t_edit for t in seq)  # 999, 856, 713, 570
    n_plain = n_gen - n_edit
    assert (n_edit, n_plain) == (4, 4)
    hf = _block(bb)  # (sizing it probes the backbone once: do that before counting)
    plan = EditPlan(n_inv=n_inv, n_gen=n_gen, t_edit=t_edit, t_boost=t_boost)
    counter = _Counter(bb)
    try:
        strength = 1.0 if K == 1 else [-1.0, 0.5, 1.0]
        edit(
            bb,
            images(B),
            hf,
            a=A,
            plan=plan,
            strength=strength,
            seeds=[0, 1],
        )
    finally:
        counter.restore()
    full_passes = (n_inv - 1) + n_plain
    assert counter.calls == {"forward": full_passes, "encode": full_passes + n_edit, "decode": full_passes + n_edit}
    # decoder batch sizes, in order: inversion (B), Asyrp steps (2 * K * B, one call), DDIM below t_edit (K * B)
    assert counter.decode_rows == [B] * (n_inv - 1) + [2 * K * B] * n_edit + [K * B] * n_plain
    if K == 1:  # the plan's own count of passes per edited image is what the walk made
        assert plan.passes() == (counter.calls["encode"], sum(counter.decode_rows) // B) == (13, 13 + n_edit)


def test_baseline_costs():
    bb = tiny_backbone(0)
    x = torch.randn(2, 3, 16, 16)
    hf, img = _direction(bb, 0.1), GlobalDirection((3, 16, 16), init_std=0.1)
    _ = bb.h_shape  # probe before counting
    expected = {
        "asyrp": ({"forward": 0, "encode": 1, "decode": 1}, [4]),
        "symmetric": ({"forward": 0, "encode": 1, "decode": 1}, [2]),
        "eps_shift": ({"forward": 0, "encode": 1, "decode": 1}, [2]),
        "x_shift": ({"forward": 1, "encode": 1, "decode": 1}, [2]),
    }
    for mode, (calls, rows) in expected.items():
        counter = _Counter(bb)
        try:
            with torch.no_grad():
                asyrp_step(bb, x, 700, 600, A, img if mode in ("eps_shift", "x_shift") else hf, mode=mode)
        finally:
            counter.restore()
        assert counter.calls == calls, mode
        assert counter.decode_rows == rows, mode


@torch.no_grad()
def test_trajectory_and_given_x_T(bb):
    x0 = images(1)
    hf = _block(bb)
    res = edit(bb, x0, hf, **KW, seeds=[0], return_trajectory=True)
    assert [t for t, _, _ in res.trajectory] == list(reversed(timesteps(8)))
    again = edit(bb, None, hf, **KW, seeds=[0], x_T=res.x_T)
    assert torch.equal(again.x_edit, res.x_edit)
    with pytest.raises(ValueError, match="t_edit"):
        edit(bb, x0, hf, a=A, plan=EditPlan(n_inv=6, n_gen=8))


@torch.no_grad()
def test_one_timestep_plan_for_cache_module_and_edit(bb, tmp_path):
    """spacing='uniform' gives the same grid to the inversion cache, the training module and edit (one plan)."""
    from functools import partial
    from pathlib import Path

    from omegaconf import OmegaConf

    from asyrp.clip import load_clip
    from asyrp.data.cache import InversionCache, noise_sources
    from asyrp.module import AsyrpModule

    plan = EditPlan(n_inv=5, n_gen=6, t0=999, t_edit=500, t_boost=200, spacing="uniform")
    assert plan.seq_gen == timesteps(6, 999, "uniform") != timesteps(6, 999)
    cache = InversionCache(tmp_path, bb, A, plan)
    entry = cache.compute(noise_sources(0, 1), None)[0]
    assert entry["t"].tolist() == [t for t, _ in plan.generation()]
    clip = load_clip(OmegaConf.load(Path(__file__).resolve().parents[2] / "conf" / "clip" / "tiny.yaml"))
    m = AsyrpModule(
        _block(bb), bb, clip, A, source=["a"], target=["b"], optimizer=partial(torch.optim.SGD, lr=0.1), plan=plan
    )
    assert m.train_steps == plan.edit_steps() and all(entry["t"][k] == t for k, t, _ in m.train_steps)
    res = edit(bb, images(1), _block(bb), a=A, plan=plan, seeds=[0], return_trajectory=True)
    assert res.seq_gen == plan.seq_gen and [t for t, _, _ in res.trajectory] == [t for t, _ in plan.generation()]
    # the walk behind edit is the same as ddim_generate when nothing is edited and nothing is stochastic
    rec = edit(bb, None, None, a=A, plan=replace(plan, t_boost=0), seeds=[0], x_T=res.x_T)
    assert torch.equal(rec.x_edit, ddim_generate(bb, res.x_T, plan.seq_gen, A))
