"""Noise schedules and timestep sequences (1000-step scale, as the published checkpoints were trained)."""

from __future__ import annotations

import math

import numpy as np
import torch

NUM_TRAIN_TIMESTEPS = 1000


def linear_betas(n: int = NUM_TRAIN_TIMESTEPS, start: float = 1e-4, end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (DDIM/SDEdit, ADM-256 and P2 models)."""
    return torch.linspace(start, end, n, dtype=torch.float64)


def cosine_betas(n: int = NUM_TRAIN_TIMESTEPS, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """iDDPM's cosine schedule: alpha_bar(t) = cos^2(((t/n + s) / (1 + s)) * pi/2), betas clipped at max_beta."""
    f = lambda u: math.cos((u + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    return torch.tensor([min(1 - f((i + 1) / n) / f(i / n), max_beta) for i in range(n)], dtype=torch.float64)


def make_betas(kind: str = "linear", n: int = NUM_TRAIN_TIMESTEPS, **kw) -> torch.Tensor:
    if kind == "linear":
        return linear_betas(n, **kw)
    if kind == "cosine":
        return cosine_betas(n, **kw)
    raise ValueError(f"unknown beta schedule {kind!r}: use 'linear' or 'cosine'")


def alphas_cumprod(betas: torch.Tensor) -> torch.Tensor:
    """a_t = prod_{s<=t} (1 - beta_s), float64. The paper's a_t (alpha-bar in DDPM notation)."""
    return torch.cumprod(1.0 - betas.double(), dim=0)


def timesteps(n_steps: int, t0: int = NUM_TRAIN_TIMESTEPS - 1, kind: str = "official") -> list[int]:
    """Increasing timesteps for an n-step DDIM walk between 0 and t0 (inversion order; reverse it to generate).

    'official': Asyrp's ``int(linspace(0, 1, n) * t0 + 1e-6)``, which starts at 0 and ends exactly at t0. The
    1e-6 matters: without it float error truncates e.g. 777.0 to 776 for 46 step counts below 1000 (n=10 among them);
    DiffusionCLIP omitted it, Asyrp's diffusion_latent.py adds it.
    'uniform': DDIM's uniform skipping ``range(0, t0 + 1, (t0 + 1) // n)``.
    """
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if kind == "official":
        # numpy's linspace, as upstream, so the int() truncation lands on the same integers
        return [int(s + 1e-6) for s in np.linspace(0, 1, n_steps) * t0]
    if kind == "uniform":
        skip = max((t0 + 1) // n_steps, 1)
        return list(range(0, t0 + 1, skip))[:n_steps]
    raise ValueError(f"unknown timestep spacing {kind!r}: use 'official' or 'uniform'")


def alpha_at(a: torch.Tensor, t: int) -> torch.Tensor:
    """a_t with the convention a_{-1} = 1 (the step that lands on the clean image)."""
    return a.new_ones(()) if t < 0 else a[t]
