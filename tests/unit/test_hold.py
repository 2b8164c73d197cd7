"""The plan's P_t hold (``plan.hold``): P_t^edit inside the region of the edit's own largest change, P_t^orig outside,
at no extra network pass; its settings checked, stored in the h-function file and overridable at edit time."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from helpers import images, tiny_backbone

from asyrp.ddim import P_t
from asyrp.hfunctions import DeltaBlock
from asyrp.ops.errors import AsyrpUserError
from asyrp.plan import EditPlan, resolve_plan, stored_edit
from asyrp.samplers import edit, held_eps
from asyrp.schedules import alphas_cumprod, make_betas

A = alphas_cumprod(make_betas("linear"))
PLAN = EditPlan(n_inv=6, n_gen=8, t0=999, t_edit=400, t_boost=0)


def test_held_eps_keeps_eps_outside_the_region_of_the_largest_change():
    eps = torch.randn(2, 3, 16, 16)
    change = torch.full_like(eps, 0.05)  # a low change everywhere (what an attribute's delta_h also moves)
    change[0, :, 2:5, 2:5] = 1.0  # image 0's attribute: one patch; image 1's: another, smaller in value
    change[1, 1, 10:12, 8:14] = -0.4
    out = held_eps(eps, eps + change, hold=0.5, dilate=1)
    inside = torch.zeros(2, 1, 16, 16, dtype=torch.bool)
    inside[0, :, 1:6, 1:6] = True  # the patch grown by one pixel
    inside[1, :, 9:13, 7:15] = True
    inside = inside.expand_as(eps)
    assert torch.equal(out[inside], (eps + change)[inside])  # each image's region from its own peak (1.0 and 0.4)
    assert torch.equal(out[~inside], eps[~inside])
    # the region is a fraction of each image's peak: the same edit 10x weaker is held the same way
    weak = held_eps(eps, eps + 0.1 * change, hold=0.5, dilate=1)
    assert torch.equal((weak - eps != 0), (out - eps != 0))
    # a hold below the low change keeps the whole edit
    assert torch.equal(held_eps(eps, eps + change, hold=0.01, dilate=0), eps + change)


@torch.no_grad()
def test_a_held_edit_changes_less_outside_its_region_at_the_same_network_passes():
    bb = tiny_backbone(0)
    torch.manual_seed(1)
    hf = DeltaBlock("ddpm", bb.h_channels, bb.emb_dim).eval()
    x0 = images(2)
    rec = edit(bb, x0, None, a=A, plan=PLAN, seeds=[0, 1]).x_edit
    free = edit(bb, x0, hf, a=A, plan=PLAN, strength=0.2, seeds=[0, 1])
    held = edit(bb, x0, hf, a=A, plan=replace(PLAN, hold=0.6), strength=0.2, seeds=[0, 1])
    # the unheld edit's own largest changes: where the held edit may still act
    d_free, d_held = (free.x_edit - rec).abs().amax(1), (held.x_edit - rec).abs().amax(1)
    top = d_free.flatten(1) >= d_free.flatten(1).quantile(0.8, dim=1, keepdim=True)
    # (tiny untrained backbone: 0.59x outside, 0.98x inside when written)
    assert float(d_held.flatten(1)[~top].mean()) < 0.7 * float(d_free.flatten(1)[~top].mean())
    assert float(d_held.flatten(1)[top].mean()) > 0.9 * float(d_free.flatten(1)[top].mean())  # the edit still acts
    # a hold below every change is the unheld edit
    same = edit(bb, x0, hf, a=A, plan=replace(PLAN, hold=1e-9, hold_dilate=0), strength=0.2, seeds=[0, 1])
    torch.testing.assert_close(same.x_edit, free.x_edit, rtol=1e-5, atol=1e-4)  # eps + (eps_edit - eps): rounding only
    assert replace(PLAN, hold=0.4).passes() == PLAN.passes()


def test_hold_settings_are_checked_stored_and_overridable():
    keys = {"hold": 0.3, "hold_dilate": 1}
    stored = stored_edit(replace(PLAN, **keys), 1.0)
    assert {k: stored[k] for k in keys} == keys
    plan, _ = resolve_plan({}, [stored])  # edit.py with nothing given: as stored
    assert (plan.hold, plan.hold_dilate) == (0.3, 1)
    plan, _ = resolve_plan({"hold": 0}, [stored])  # plan.hold=0 switches it off
    assert plan.hold is None
    assert resolve_plan({}, [stored_edit(PLAN, 1.0)])[0].hold is None  # files without a hold (and older files)
    plan, _ = resolve_plan({}, [stored_edit(PLAN, 1.0), stored])  # a composition: the file that has one
    assert (plan.hold, plan.hold_dilate) == (0.3, 1)
    for given, match in [
        ({"hold": 1.5}, r"plan\.hold=1\.5 must be in \[0, 1\)"),
        ({"hold": "x"}, r"plan\.hold='x' must be a number"),
        ({"hold": 0.3, "hold_dilate": -1}, r"plan\.hold_dilate=-1 must be >= 0"),
        ({"hold": 0.3, "mode": "symmetric"}, r"plan\.hold=0\.3 needs plan\.mode in asyrp, eps_shift"),
    ]:
        with pytest.raises(AsyrpUserError, match=match):
            resolve_plan(given, [stored_edit(PLAN, 1.0)])


def test_p_t_is_linear_in_eps_so_holding_eps_holds_p_t():
    """Why ``held_eps`` may blend eps: P_t^held = region * P_t^edit + (1 - region) * P_t^orig."""
    x, eps, eps_edit = torch.randn(3, 1, 3, 8, 8).unbind(0)
    a_t = A[500]
    held = held_eps(eps, eps_edit, hold=0.5, dilate=0)
    region = (held != eps).any(1, keepdim=True).to(x)
    blend = region * P_t(x, eps_edit, a_t) + (1 - region) * P_t(x, eps, a_t)
    torch.testing.assert_close(P_t(x, held, a_t), blend)
