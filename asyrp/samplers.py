"""DDIM in the paper's notation, as plain functions that receive the backbone (they never own it).

With a = alpha-bar:  P_t(e) = (x_t - sqrt(1 - a_t) e) / sqrt(a_t)   (the predicted x0)
                     D_t(e) = sqrt(1 - a_{t-1} - sigma_t^2) e          (the direction pointing to x_t)
                     x_{t-1} = sqrt(a_{t-1}) P_t(e) + D_t(e) + sigma_t z
Timesteps are on the 1000-step scale; t_next = -1 means a_{t_next} = 1 (the last step lands on x0).
"""
from __future__ import annotations

from typing import Sequence

import torch

from .backbones.base import Backbone
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


def ddim_step(
    backbone: Backbone,
    x_t: torch.Tensor,
    t: int,
    t_next: int,
    a: torch.Tensor,
    eta: float = 0.0,
    noise: torch.Tensor | None = None,
) -> torch.Tensor:
    """One DDIM step from t to t_next (either direction: t_next > t inverts). One full network pass."""
    eps = backbone.eps(backbone(x_t, _t_batch(t, x_t)))
    return ddim_update(x_t, eps, eps, alpha_at(a, t), alpha_at(a, t_next), eta=eta, noise=noise)


def inversion_pairs(seq: Sequence[int]) -> list[tuple[int, int]]:
    """(t, t_next) for deterministic inversion along an increasing sequence: the network is evaluated at t."""
    return list(zip(seq[:-1], seq[1:]))


def generation_pairs(seq: Sequence[int]) -> list[tuple[int, int]]:
    """(t, t_next) for generation down an increasing sequence, ending with (seq[0], -1)."""
    down = list(reversed(seq))
    return list(zip(down, down[1:] + [-1]))


@torch.no_grad()
def ddim_invert(backbone: Backbone, x0: torch.Tensor, seq: Sequence[int], a: torch.Tensor) -> torch.Tensor:
    """Deterministic DDIM inversion x0 -> x_T along ``seq`` (no clipping: clipping would break invertibility)."""
    x = x0
    for t, t_next in inversion_pairs(seq):
        x = ddim_step(backbone, x, t, t_next, a)
    return x


@torch.no_grad()
def ddim_generate(
    backbone: Backbone, x_T: torch.Tensor, seq: Sequence[int], a: torch.Tensor, eta: float = 0.0
) -> torch.Tensor:
    """DDIM generation x_T -> x0 down ``seq`` (the inverse walk of ``ddim_invert`` when eta = 0)."""
    x = x_T
    for t, t_next in generation_pairs(seq):
        x = ddim_step(backbone, x, t, t_next, a, eta=eta)
    return x
