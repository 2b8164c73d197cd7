"""Asyrp's walk as plain functions that receive the backbone (they never own it), on the DDIM of asyrp.ddim.

Asyrp keeps D_t on the network's own eps and feeds P_t the eps obtained from the shifted bottleneck h + delta_h:
x_{t-1} = sqrt(a_{t-1}) P_t(eps_theta(x_t | h + delta_h)) + D_t(eps_theta(x_t | h)).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch

from .backbones.base import Backbone
from .ddim import P_t, _t_batch, ddim_invert, ddim_update, ddim_walk
from .hfunctions.modules import Coefficients, Composition, apply_hfunction, n_components
from .masks import held_eps
from .plan import MODES, EditPlan
from .schedules import alpha_at


@dataclass
class EditEps:
    """The two noise predictions of one edited step.

    ``eps`` feeds D_t, ``eps_edit`` feeds P_t. ``delta_h`` is the shift that was applied, in the space the mode
    edits (h for asyrp/symmetric, eps for eps_shift, x for x_shift; None without an h-function). ``x_t`` is the
    state the DDIM update acts on when the mode moved it (x_shift), else None.
    """

    eps: torch.Tensor
    eps_edit: torch.Tensor
    h: torch.Tensor | None
    delta_h: torch.Tensor | None
    x_t: torch.Tensor | None = None


@dataclass
class StepResult:
    """One step: x_{t-1}, P_t of the edited and (when it comes for free) of the unedited prediction, delta_h."""

    x_next: torch.Tensor
    P_edit: torch.Tensor
    P_orig: torch.Tensor | None
    delta_h: torch.Tensor | None


@dataclass
class EditResult:
    """Output of ``edit``: x_edit (B, C, H, W), or (K, B, C, H, W) for K coefficient settings; the inverted x_T;
    the plan it walked.

    ``trajectory`` (if asked): one (t, x_t, P_t) per generation step, P_t being the edited prediction while
    editing; with K settings the tensors hold K*B rows (setting k of image b at row k*B + b).
    """

    x_edit: torch.Tensor
    x_T: torch.Tensor
    plan: EditPlan
    trajectory: list[tuple[int, torch.Tensor, torch.Tensor]] | None = None

    @property
    def seq_gen(self) -> list[int]:
        return self.plan.seq_gen


def _t_rows(t: Any, x: torch.Tensor) -> torch.Tensor:
    t = torch.as_tensor(t, device=x.device, dtype=torch.float32)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


def _encoding_requires_grad(enc) -> bool:
    return any(v.requires_grad for v in (enc.h, enc.emb, *enc.skips, *enc.extra))


def edit_eps(
    backbone: Backbone,
    x_t: torch.Tensor,
    t: Any,
    hfunc,
    *,
    mode: str = "asyrp",
    strength: Coefficients = 1.0,
) -> EditEps:
    """eps for D_t and eps_edit for P_t at x_t (differentiable w.r.t. the h-function; the backbone is frozen).

    Modes (the paper's method and the ablations it argues against, Sec. 3):
      - "asyrp": one encode, delta_h = strength * f(h, emb, t), ONE decoder call on cat([h, h + delta_h]):
        the first B rows give eps (D_t), the last B rows eps_edit (P_t). When a gradient is being recorded for
        the h-function only (training: x_t and the backbone need none), the same 2B rows are decoded in two calls,
        eps without a graph, so that the backward pass covers the B edited rows only.
      - "symmetric": h + delta_h drives both P_t and D_t (one encode, one decode of B rows). The shifts in P_t and
        D_t cancel to a large extent (paper, Theorem 1), which is why the paper makes the process asymmetric.
      - "eps_shift": asymmetric editing directly in eps-space: eps_edit = eps + strength * f(eps, emb, t) in P_t
        only (the official "image_space_noise" ablation, there a global eps-shaped tensor or a network of eps and
        temb); one full pass. f must be eps-shaped (e.g. GlobalDirection(image shape)).
      - "x_shift": edit the latent variable itself: x_t + strength * f(x_t, None, t), then a plain DDIM step from
        the shifted state (one full pass). f gets no time embedding (it is computed before the network runs).
    ``strength``: a number, one value per row, or per-row coefficients for a Composition (see apply_hfunction).
    ``hfunc=None`` is the unedited prediction (one encode + one decode of B rows).
    """
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}: use one of {MODES}")
    t_vec = _t_rows(t, x_t)
    if hfunc is not None and mode == "x_shift":
        delta_x = apply_hfunction(hfunc, x_t, None, t_vec, strength)
        x_s = x_t + delta_x
        eps = backbone.eps(backbone(x_s, t_vec))
        return EditEps(eps=eps, eps_edit=eps, h=None, delta_h=delta_x, x_t=x_s)
    enc = backbone.encode(x_t, t_vec)
    h = enc.h
    if hfunc is None:
        eps = backbone.eps(backbone.decode(enc))
        return EditEps(eps=eps, eps_edit=eps, h=h, delta_h=None)
    if mode == "asyrp":
        delta_h = apply_hfunction(hfunc, h, enc.emb, t_vec, strength)
        if delta_h.requires_grad and not _encoding_requires_grad(enc):
            # training: eps does not depend on the h-function, so it is decoded without a graph and only the B
            # edited rows are back-propagated through (one batched call would back-propagate through all 2B rows,
            # about twice the backward cost). Same decoder rows (2B) as the batched call.
            with torch.no_grad():
                eps = backbone.eps(backbone.decode(enc))
            eps_edit = backbone.eps(backbone.decode(enc, h + delta_h))
            return EditEps(eps=eps, eps_edit=eps_edit, h=h, delta_h=delta_h)
        out = backbone.eps(backbone.decode(enc, torch.cat([h, h + delta_h])))
        B = x_t.shape[0]
        return EditEps(eps=out[:B], eps_edit=out[B:], h=h, delta_h=delta_h)
    if mode == "symmetric":
        delta_h = apply_hfunction(hfunc, h, enc.emb, t_vec, strength)
        eps = backbone.eps(backbone.decode(enc, h + delta_h))
        return EditEps(eps=eps, eps_edit=eps, h=h, delta_h=delta_h)
    # eps_shift
    eps = backbone.eps(backbone.decode(enc))
    delta_eps = apply_hfunction(hfunc, eps, enc.emb, t_vec, strength)
    return EditEps(eps=eps, eps_edit=eps + delta_eps, h=h, delta_h=delta_eps)


def masked_eps(
    backbone: Backbone,
    x_t: torch.Tensor,
    t: Any,
    hfunc,
    regions: torch.Tensor,
    *,
    strength: Coefficients = 1.0,
) -> EditEps:
    """Asyrp's two predictions with P_t^edit kept inside given per-image regions: ``regions`` (N, m, H, W) in [0, 1],
    m = 1 (one region for the whole shift) or one per function of a Composition. With one region: eps_edit inside
    it, eps outside. With one per function, each function's shift is decoded on its own rows and held to its own
    region, and the held changes add up: a composition's hair colour then cannot tint the skin that lies in the
    glasses' or the mouth's region (m + 1 decoder row blocks per step instead of the plain step's 2)."""
    m = regions.shape[1]
    if m == 1:
        ee = edit_eps(backbone, x_t, t, hfunc, mode="asyrp", strength=strength)
        return replace(ee, eps_edit=ee.eps + regions.to(ee.eps) * (ee.eps_edit - ee.eps))
    if not isinstance(hfunc, Composition) or len(hfunc) != m:
        raise ValueError(f"{m} regions per image need a composition of {m} h-functions (got {n_components(hfunc)})")
    t_vec = _t_rows(t, x_t)
    enc = backbone.encode(x_t, t_vec)
    h, N = enc.h, x_t.shape[0]
    comps = hfunc.components(h, enc.emb, t_vec)  # (m, N, ...)
    c = torch.as_tensor(strength, device=h.device, dtype=h.dtype)
    c = c.expand(N, m) if c.dim() < 2 else c
    deltas = [c[:, i].view(N, 1, 1, 1) * comps[i] for i in range(m)]
    out = backbone.eps(backbone.decode(enc, torch.cat([h] + [h + d for d in deltas])))
    eps = out[:N]
    change = sum(regions[:, i : i + 1].to(eps) * (out[(i + 1) * N : (i + 2) * N] - eps) for i in range(m))
    return EditEps(eps=eps, eps_edit=eps + change, h=h, delta_h=sum(deltas))


def asyrp_step(
    backbone: Backbone,
    x_t: torch.Tensor,
    t: int,
    t_next: int,
    a: torch.Tensor,
    hfunc,
    *,
    mode: str = "asyrp",
    strength: Coefficients = 1.0,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> StepResult:
    """x_{t-1} = sqrt(a_{t-1}) P_t(eps_edit) + D_t(eps) (+ sigma_t z when eta > 0).

    ``P_orig`` = P_t(eps) of the unedited prediction at the same x_t when the mode computes it anyway
    (asyrp, eps_shift, no h-function); None for symmetric and x_shift (it would cost another decode).
    """
    ee = edit_eps(backbone, x_t, t, hfunc, mode=mode, strength=strength)
    x = x_t if ee.x_t is None else ee.x_t
    a_t, a_next = alpha_at(a, t), alpha_at(a, t_next)
    x_next = ddim_update(x, ee.eps_edit, ee.eps, a_t, a_next, eta=eta, noise=noise)
    free_orig = hfunc is None or mode in ("asyrp", "eps_shift")
    return StepResult(
        x_next=x_next,
        P_edit=P_t(x, ee.eps_edit, a_t),
        P_orig=P_t(x_t, ee.eps, a_t) if free_orig else None,
        delta_h=ee.delta_h,
    )


def _coefficient_rows(hfunc, strength: Coefficients, B: int) -> tuple[int, Any, bool]:
    """(K, per-row coefficients for K*B rows, editing?) from the ``strength`` argument of ``edit``.

    number -> one setting; for a Composition of n functions a vector of n values is one coefficient vector,
    for a single function a vector lists K strengths; a (K, n) matrix lists K coefficient vectors.
    """
    n = n_components(hfunc)
    if hfunc is None:
        return 1, 0.0, False
    if isinstance(strength, (int, float)):
        return 1, float(strength), float(strength) != 0.0
    c = torch.as_tensor(strength, dtype=torch.float64)  # cast to h's dtype only when applied
    if c.dim() == 0:
        return 1, float(c), float(c) != 0.0
    if c.dim() == 1:
        c = c[None, :] if (n > 1 and c.numel() == n) else c[:, None]
    if c.dim() != 2 or c.shape[1] != n:
        raise ValueError(
            f"strength of shape {tuple(torch.as_tensor(strength).shape)} does not fit an h-function with {n} "
            f"component(s): pass a number, {n} coefficients, or a (K, {n}) matrix of coefficient vectors"
        )
    K = c.shape[0]
    rows = c.repeat_interleave(B, dim=0)  # setting k of image b at row k*B + b
    rows = rows[:, 0] if n == 1 else rows
    return K, rows, bool((c != 0).any())


def image_noise(gens: list[torch.Generator], shape: Sequence[int], like: torch.Tensor) -> torch.Tensor:
    """One N(0, I) draw per image from that image's own generator (CPU, so results match across devices)."""
    z = torch.stack([torch.randn(tuple(shape), generator=g, dtype=torch.float32) for g in gens])
    return z.to(device=like.device, dtype=like.dtype)


@torch.no_grad()
def edit(
    backbone: Backbone,
    x0: torch.Tensor | None,
    hfunc,
    *,
    a: torch.Tensor,
    plan: EditPlan,
    strength: Coefficients = 1.0,
    seeds: Sequence[int] | None = None,
    x_T: torch.Tensor | None = None,
    return_trajectory: bool = False,
    regions: torch.Tensor | None = None,
) -> EditResult:
    """Edit real images along ``plan``: DDIM inversion, then Asyrp on [T, t_edit], DDIM, quality boosting below t_boost.

    - Inversion up ``plan.seq_inv``, deterministic, no clipping (skipped if ``x_T`` is given).
    - Generation down ``plan.seq_gen``: an Asyrp step (``plan.mode``; asyrp: one encode + one decode of 2B rows)
      while t >= t_edit, a plain DDIM step (one full pass) below, with eta = 1 while t < t_boost (stochastic quality
      boosting; t_boost None or 0 disables it).
    - ``strength``: a number (negative reverses the attribute), coefficients of a Composition, or K settings at
      once (a list of strengths / a (K, n) matrix): the K*B trajectories run in the same batched calls and
      x_edit is (K, B, C, H, W).
    - Noise: image b draws from ``torch.Generator().manual_seed(seeds[b])`` (default: seeds drawn from torch's
      global RNG), so an image's result does not depend on the batch it is in; its K settings share that noise.
    - ``plan.hold``: the edit's P_t^edit only inside the region of its largest change of P_t (``held_eps``).
    - ``regions`` (B, m, H, W), given per image (masks a user or a face parser drew): P_t^edit only inside them
      (``masked_eps``; m = 1, or one per function of a composition); they replace ``plan.hold``'s region.
    - Reconstruction: ``hfunc=None`` or strength 0 runs no Asyrp step at all (identical to ddim_generate when
      t_boost disables boosting).
    - Step count: delta_h acts once per step, so the official code scales the strength by n_train / n_gen when
      generating with a different number of steps than the h-function was trained with; pass that as strength.
    Inference only (no grad); training code calls ``asyrp_step`` / ``edit_eps`` directly.
    """
    if x_T is None and x0 is None:
        raise ValueError("edit needs x0 (to invert) or x_T")
    ref = x0 if x0 is not None else x_T
    B = ref.shape[0]
    K, coeffs, editing = _coefficient_rows(hfunc, strength, B)
    t_edit = plan.t_edit
    if editing and t_edit is None:
        raise ValueError("edit with an h-function needs plan.t_edit (e.g. from conf/plan or asyrp.interval)")
    if seeds is None:
        seeds = torch.randint(0, 2**62, (B,)).tolist()
    seeds = list(seeds)
    if len(seeds) != B:
        raise ValueError(f"got {len(seeds)} seeds for {B} images: pass one seed per image")
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]

    if x_T is None:
        x_T = ddim_invert(backbone, x0, plan.seq_inv, a)
    x = x_T.repeat(K, *([1] * (x_T.dim() - 1)))
    trajectory: list[tuple[int, torch.Tensor, torch.Tensor]] | None = [] if return_trajectory else None

    if regions is not None:
        if plan.mode != "asyrp":
            raise ValueError(f"regions hold P_t^edit of mode asyrp; plan.mode is {plan.mode}")
        regions = regions.to(ref).repeat(K, 1, 1, 1)  # setting k of image b at row k*B + b

    def predict(x_t: torch.Tensor, t: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if editing and t >= t_edit and regions is not None:  # P_t^edit inside the given regions only
            ee = masked_eps(backbone, x_t, t, hfunc, regions, strength=coeffs)
            return x_t, ee.eps_edit, ee.eps
        if editing and t >= t_edit:  # Asyrp: the shifted h feeds P_t only
            ee = edit_eps(backbone, x_t, t, hfunc, mode=plan.mode, strength=coeffs)
            eps_P = held_eps(ee.eps, ee.eps_edit, plan.hold, plan.hold_dilate) if plan.hold else ee.eps_edit
            return (x_t if ee.x_t is None else ee.x_t), eps_P, ee.eps
        eps = backbone.eps(backbone(x_t, _t_batch(t, x_t)))
        return x_t, eps, eps

    def noise(x_t: torch.Tensor, t: int) -> torch.Tensor:  # image b's own generator; its K settings share it
        return image_noise(gens, x_t.shape[1:], x_t).repeat(K, *([1] * (x_t.dim() - 1)))

    record = None if trajectory is None else (lambda s: trajectory.append((s.t, s.x_t, s.P_t)))
    x = ddim_walk(backbone, x, plan.generation(), a, eta=plan.eta, noise=noise, predict=predict, callback=record)
    x_edit = x.view(K, B, *x.shape[1:]) if K > 1 or _is_multi(strength, hfunc) else x
    return EditResult(x_edit=x_edit, x_T=x_T, plan=plan, trajectory=trajectory)


def _is_multi(strength: Coefficients, hfunc) -> bool:
    """Whether ``strength`` lists settings (K >= 1 of them) rather than being one setting."""
    if hfunc is None or isinstance(strength, (int, float)):
        return False
    c = torch.as_tensor(strength)
    return c.dim() == 2 or (c.dim() == 1 and not (n_components(hfunc) > 1 and c.numel() == n_components(hfunc)))
