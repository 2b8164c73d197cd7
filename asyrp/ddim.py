"""DDIM in the paper's notation, as plain functions that receive the backbone (they never own it).

With a = alpha-bar:  P_t(e) = (x_t - sqrt(1 - a_t) e) / sqrt(a_t)   (the predicted x0)
                     D_t(e) = sqrt(1 - a_{t-1} - sigma_t^2) e          (the direction pointing to x_t)
                     x_{t-1} = sqrt(a_{t-1}) P_t(e) + D_t(e) + sigma_t z
Timesteps are on the 1000-step scale; t_next = -1 means a_{t_next} = 1 (the last step lands on x0).
The Asyrp walk built on it is asyrp.samplers.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .backbones.base import Backbone
from .plan import generation_pairs, inversion_pairs
from .schedules import alpha_at


def P_t(x_t: torch.Tensor, eps: torch.Tensor, a_t: torch.Tensor) -> torch.Tensor:
    """The predicted clean image from x_t and a noise prediction."""
    return (x_t - (1 - a_t).sqrt().to(x_t.dtype) * eps) / a_t.sqrt().to(x_t.dtype)


def sigma_t(a_t: torch.Tensor, a_next: torch.Tensor, eta: float) -> torch.Tensor:
    """DDIM's noise scale: eta = 0 is deterministic, eta = 1 is the DDPM posterior variance."""
    if eta == 0:
        return a_t.new_zeros(())
    return eta * ((1 - a_next) / (1 - a_t) * (1 - a_t / a_next)).clamp(min=0).sqrt()


def D_t(eps: torch.Tensor, a_next: torch.Tensor, sigma: torch.Tensor | float = 0.0) -> torch.Tensor:
    """The direction pointing to x_{t-1}."""
    sigma = torch.as_tensor(sigma, dtype=torch.float64)
    return (1 - a_next - sigma**2).clamp(min=0).sqrt().to(eps.dtype) * eps


def ddim_update(
    x_t: torch.Tensor,
    eps_P: torch.Tensor,
    eps_D: torch.Tensor,
    a_t: torch.Tensor,
    a_next: torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """x_{t-1} = sqrt(a_{t-1}) P_t(eps_P) + D_t(eps_D) + sigma z. eps_P == eps_D is plain DDIM; Asyrp passes two."""
    sig = sigma_t(a_t, a_next, eta)
    x_next = a_next.sqrt().to(x_t.dtype) * P_t(x_t, eps_P, a_t) + D_t(eps_D, a_next, sig)
    if eta > 0:
        if noise is None:
            noise = torch.randn_like(x_t)
        x_next = x_next + sig.to(x_t.dtype) * noise
    return x_next


def _t_batch(t: int, x: torch.Tensor) -> torch.Tensor:
    return torch.full((x.shape[0],), float(t), device=x.device, dtype=torch.float32)


@dataclass
class WalkStep:
    """What one step of ``ddim_walk`` hands its callback: t, t_next, the walk's state x_t, P_t (the prediction that
    fed the update) and eps (the noise prediction that fed D_t)."""

    t: int
    t_next: int
    x_t: torch.Tensor
    P_t: torch.Tensor
    eps: torch.Tensor


def ddim_walk(
    backbone: Backbone,
    x: torch.Tensor,
    pairs: Sequence[tuple[int, int]],
    a: torch.Tensor,
    *,
    eta: float | Callable[[int], float] = 0.0,
    noise: Callable[[torch.Tensor, int], torch.Tensor | None] | None = None,
    clip_x0: bool = False,
    predict: Callable[[torch.Tensor, int], tuple[torch.Tensor, torch.Tensor, torch.Tensor]] | None = None,
    callback: Callable[[WalkStep], None] | None = None,
) -> torch.Tensor:
    """The one DDIM walk: x_{t-1} = sqrt(a_{t-1}) P_t(eps_P) + D_t(eps) (+ sigma_t z) over ``pairs`` (up = inversion,
    down = generation); returns the end point. Every walk of the library (inversion, generation, edit, the cache,
    interval measurement, the synthfaces sampler) is this loop with its hooks:

    - ``eta``: a number or a function of t (quality boosting); ``noise(x, t)`` gives z when eta > 0 (default randn).
    - ``clip_x0``: clamp P_t to [-1, 1] and use the eps consistent with it (plain DDIM only; never for inversion).
    - ``predict(x, t) -> (x_used, eps_P, eps)``: the two noise predictions (Asyrp's edited step); default: one full
      network pass, eps_P = eps, x_used = x.
    - ``callback(WalkStep)``: after every step, e.g. to record (t, x_t, P_t).
    """
    for t, t_next in pairs:
        e = float(eta(t)) if callable(eta) else float(eta)
        if predict is None:
            eps = backbone.eps(backbone(x, _t_batch(t, x)))
            x_used, eps_P = x, eps
        else:
            x_used, eps_P, eps = predict(x, t)
        a_t, a_next = alpha_at(a, t), alpha_at(a, t_next)
        if clip_x0:
            x0 = P_t(x_used, eps_P, a_t).clamp(-1, 1)
            eps = eps_P = (x_used - a_t.sqrt().to(x.dtype) * x0) / (1 - a_t).sqrt().to(x.dtype)
        z = noise(x, t) if (e > 0 and noise is not None) else None
        x_next = ddim_update(x_used, eps_P, eps, a_t, a_next, eta=e, noise=z)
        if callback is not None:
            callback(WalkStep(t, t_next, x, P_t(x_used, eps_P, a_t), eps))
        x = x_next
    return x


@torch.no_grad()
def ddim_invert(backbone: Backbone, x0: torch.Tensor, seq: Sequence[int], a: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion x0 -> x_T along ``seq`` (no clipping: clipping would break invertibility)."""
    return ddim_walk(backbone, x0, inversion_pairs(seq), a)


@torch.no_grad()
def ddim_generate(
    backbone: Backbone, x_T: torch.Tensor, seq: Sequence[int], a: torch.Tensor, eta: float = 0.0
) -> torch.Tensor:
    """DDIM generation x_T -> x0 down ``seq`` (the inverse walk of ``ddim_invert`` when eta = 0)."""
    return ddim_walk(backbone, x_T, generation_pairs(seq), a, eta=eta)
