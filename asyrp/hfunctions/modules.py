"""h-functions: what Asyrp adds to the bottleneck, delta_h = f(h_t, t).

Every h-function is a module called ``f(h, emb, t=None) -> delta_h`` with ``delta_h`` shaped like ``h``:

- ``emb`` is the backbone's own time embedding (after its MLP), one row per row of ``h``; ``None`` means "no time
  conditioning" (the official blocks then skip their embedding branch).
- ``t`` is the timestep on the 1000-step scale (an int or one value per row); only tables indexed by t use it.

The implicit function of the paper is ``DeltaBlock`` (two published designs); ``GlobalDirection`` is the paper's
"global delta_h" variant; ``Composition`` sums several attributes with coefficients (the paper's linear
combination of directions). ``apply_hfunction`` applies strengths / coefficient rows in one batched evaluation.
The bottom of the package's chain (modules <- build <- files): it imports nothing above it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

Coefficients = float | int | torch.Tensor | Sequence[float] | Sequence[Sequence[float]]

DDPM_KEYS = frozenset(
    [
        "conv1.weight",
        "conv1.bias",
        "temb_proj.weight",
        "temb_proj.bias",
        "norm2.weight",
        "norm2.bias",
        "conv2.weight",
        "conv2.bias",
    ]
)
ADM_KEYS = frozenset(
    [
        "in_layers.0.weight",
        "in_layers.0.bias",
        "in_layers.2.weight",
        "in_layers.2.bias",
        "emb_layers.1.weight",
        "emb_layers.1.bias",
        "out_layers.0.weight",
        "out_layers.0.bias",
        "out_layers.3.weight",
        "out_layers.3.bias",
    ]
)


class HFunction(nn.Module):
    """Base class: ``forward(h, emb=None, t=None) -> delta_h``."""

    def forward(
        self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None
    ) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class _GroupNorm32(nn.GroupNorm):
    """ADM's normalisation: GroupNorm evaluated in float32 whatever the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


def _check_groups(num_groups: int, channels: int, what: str) -> None:
    if channels % num_groups != 0:
        raise ValueError(
            f"GroupNorm with {num_groups} groups cannot normalise {channels} {what} channels: "
            f"choose num_groups dividing {channels} (the official blocks use 32 on 512 channels)"
        )


class DeltaBlock(HFunction):
    """The implicit function f(h, t): a time-conditioned block of 1x1 convolutions acting on h.

    Two layouts, parameter names identical to the published checkpoints so they load strictly:

    - ``"ddpm"`` (DDPM++ backbones): conv1 -> + temb_proj(SiLU(emb)) -> GroupNorm(eps 1e-6) -> SiLU -> conv2.
    - ``"adm"`` (iDDPM/ADM backbones): in_layers (GroupNorm, SiLU, conv) -> + emb_layers (SiLU, Linear) ->
      out_layers (GroupNorm, SiLU, Dropout, conv).

    ``width`` is the hidden channel count (official: equal to the h channels). ``kernel_size`` (official: 1) lets each
    cell of delta_h see its neighbours in h: a 1x1 block maps every cell of h on its own, so a cell that straddles
    two regions (hair and skin at 8x8) gets one shift for both. The official blocks are *not*
    zero-initialised (PyTorch's default init for every layer); ``zero_init=True`` zeroes the last conv so that
    training starts from delta_h = 0, i.e. from the plain DDIM reconstruction. ``time_conditioned=False`` drops
    the embedding branch (as calling with ``emb=None``), the official ``ignore_timesteps`` variant.
    """

    def __init__(
        self,
        kind: str = "ddpm",
        channels: int = 512,
        emb_dim: int = 512,
        *,
        width: int | None = None,
        zero_init: bool = False,
        dropout: float = 0.0,
        num_groups: int = 32,
        time_conditioned: bool = True,
        kernel_size: int = 1,
    ):
        super().__init__()
        width = int(width or channels)
        k = int(kernel_size)
        if k < 1 or k % 2 == 0:
            raise ValueError(f"DeltaBlock kernel_size={kernel_size}: use an odd size >= 1 (1 = the official block)")
        self.kernel_size = k
        self.kind, self.channels, self.emb_dim, self.width = kind, int(channels), int(emb_dim), width
        self.time_conditioned = time_conditioned
        if kind == "ddpm":
            _check_groups(num_groups, width, "hidden")
            self.conv1 = nn.Conv2d(channels, width, kernel_size=k, padding=k // 2)
            self.temb_proj = nn.Linear(emb_dim, width)
            self.norm2 = nn.GroupNorm(num_groups, width, eps=1e-6)
            self.conv2 = nn.Conv2d(width, channels, kernel_size=k, padding=k // 2)
            last = self.conv2
        elif kind == "adm":
            _check_groups(num_groups, channels, "h")
            _check_groups(num_groups, width, "hidden")
            self.in_layers = nn.Sequential(
                _GroupNorm32(num_groups, channels), nn.SiLU(), nn.Conv2d(channels, width, k, padding=k // 2)
            )
            self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, width))
            self.out_layers = nn.Sequential(
                _GroupNorm32(num_groups, width),
                nn.SiLU(),
                nn.Dropout(dropout),
                nn.Conv2d(width, channels, k, padding=k // 2),
            )
            last = self.out_layers[3]
        else:
            raise ValueError(f"unknown DeltaBlock layout {kind!r}: use 'ddpm' or 'adm'")
        if zero_init:
            nn.init.zeros_(last.weight)
            nn.init.zeros_(last.bias)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None) -> torch.Tensor:
        if not self.time_conditioned:
            emb = None
        if self.kind == "ddpm":
            z = self.conv1(h)
            if emb is not None:
                z = z + self.temb_proj(F.silu(emb))[:, :, None, None]
            return self.conv2(F.silu(self.norm2(z)))
        z = self.in_layers(h)
        if emb is not None:
            z = z + self.emb_layers(emb).type(z.dtype)[:, :, None, None]
        return self.out_layers(z)

    def extra_repr(self) -> str:
        k = f", kernel_size={self.kernel_size}" if self.kernel_size != 1 else ""
        return f"kind={self.kind!r}, channels={self.channels}, emb_dim={self.emb_dim}, width={self.width}{k}"


class GlobalDirection(HFunction):
    """One learnable delta_h shared by every image (the paper's "global direction" variant).

    With ``timesteps`` it is a table: one delta_h per listed timestep, looked up by t **on the 1000-step scale**
    (not by step index), so a table trained with 40 generation steps still applies when generating with 100:
    each t reads the entry of the nearest listed timestep (ties go to the smaller one). ``shape`` is h's
    (C, H, W); an image shape turns it into the eps-/x-space directions of the ablations.
    Initialisation follows the official code (N(0, 0.2^2)); ``init_std=0`` starts from delta_h = 0.
    """

    def __init__(self, shape: Sequence[int], *, timesteps: Iterable[int] | None = None, init_std: float = 0.2):
        super().__init__()
        self.shape = tuple(int(s) for s in shape)
        if timesteps is None:
            self.register_buffer("timesteps", None)
            self.delta_h = nn.Parameter(torch.randn(self.shape) * init_std)
        else:
            ts = sorted({int(t) for t in timesteps})
            if not ts:
                raise ValueError("GlobalDirection: timesteps is empty")
            self.register_buffer("timesteps", torch.tensor(ts, dtype=torch.long))
            self.delta_h = nn.Parameter(torch.randn(len(ts), *self.shape) * init_std)

    @property
    def per_timestep(self) -> bool:
        return self.timesteps is not None

    def index(self, t: Any, n: int) -> torch.Tensor:
        """Row of the table for each of n rows at timestep(s) t (nearest listed timestep)."""
        if t is None:
            raise ValueError("a per-timestep GlobalDirection needs t (on the 1000-step scale)")
        t = torch.as_tensor(t, device=self.timesteps.device).reshape(-1).to(torch.float64)
        if t.numel() == 1:
            t = t.expand(n)
        dist = (self.timesteps.to(torch.float64)[None, :] - t[:, None]).abs()
        return dist.argmin(dim=1)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None) -> torch.Tensor:
        if tuple(h.shape[1:]) != self.shape:
            raise ValueError(f"GlobalDirection of shape {self.shape} applied to a tensor of shape {tuple(h.shape)}")
        if self.per_timestep:
            return self.delta_h[self.index(t, h.shape[0])].to(h.dtype)
        return self.delta_h.to(h.dtype).expand(h.shape[0], *self.shape)

    def extra_repr(self) -> str:
        n = "global" if not self.per_timestep else f"{len(self.timesteps)} timesteps"
        return f"shape={self.shape}, {n}"


class Composition(HFunction):
    """delta_h = sum_i c_i f_i(h, emb, t): several attributes at once (h-space is close to linear).

    ``components`` evaluates each f_i once; ``combine`` mixes them with one coefficient vector (n,) or one row of
    coefficients per batch row (N, n), so many coefficient settings cost a single evaluation of each f_i.
    Coefficients passed explicitly replace the stored ones.
    """

    def __init__(self, fns: Sequence[nn.Module], coeffs: Sequence[float] | torch.Tensor | None = None):
        super().__init__()
        if len(fns) == 0:
            raise ValueError("Composition needs at least one h-function")
        self.fns = nn.ModuleList(fns)
        c = torch.ones(len(fns)) if coeffs is None else torch.as_tensor(coeffs, dtype=torch.float32).reshape(-1)
        if c.numel() != len(fns):
            raise ValueError(f"Composition of {len(fns)} functions got {c.numel()} coefficients")
        self.register_buffer("coeffs", c.clone())

    def __len__(self) -> int:
        return len(self.fns)

    def components(self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None) -> torch.Tensor:
        """(n, N, C, H, W): every f_i(h) once."""
        return torch.stack([f(h, emb, t) for f in self.fns])

    def combine(self, components: torch.Tensor, coeffs: Coefficients | None = None) -> torch.Tensor:
        c = self.coeffs if coeffs is None else torch.as_tensor(coeffs)
        c = c.to(device=components.device, dtype=components.dtype)
        n = components.shape[0]
        if c.dim() == 1 and c.numel() == n:
            return torch.einsum("i,i...->...", c, components)
        if c.dim() == 2 and c.shape == (components.shape[1], n):
            return torch.einsum("bi,ib...->b...", c, components)
        raise ValueError(
            f"coefficients of shape {tuple(c.shape)} do not fit {n} functions and {components.shape[1]} rows: "
            f"pass ({n},) or ({components.shape[1]}, {n})"
        )

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None) -> torch.Tensor:
        return self.combine(self.components(h, emb, t))


class TimeWindow(HFunction):
    """f restricted to the timesteps t_lo <= t <= t_hi (zero elsewhere): an h-function that acts in one part of the
    edit interval only, e.g. to measure what delta_h at a given t moves (experiments/locality.py)."""

    def __init__(self, fn: nn.Module, t_hi: int, t_lo: int):
        super().__init__()
        if t_lo > t_hi:
            raise ValueError(f"TimeWindow: t_lo={t_lo} is above t_hi={t_hi}")
        self.fn, self.t_hi, self.t_lo = fn, int(t_hi), int(t_lo)

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None) -> torch.Tensor:
        if t is None:
            raise ValueError("TimeWindow needs the timestep t")
        tv = torch.as_tensor(t, device=h.device).reshape(-1)
        inside = ((tv >= self.t_lo) & (tv <= self.t_hi)).to(h.dtype).reshape(-1, *[1] * (h.dim() - 1))
        return self.fn(h, emb, t) * inside


def n_components(hfunc: nn.Module | None) -> int:
    """How many coefficients one setting of ``hfunc`` takes (a Composition: one per function)."""
    if hfunc is None:
        return 0
    return len(hfunc) if isinstance(hfunc, Composition) else 1


def apply_hfunction(
    hfunc, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None, coeffs: Coefficients = 1.0
) -> torch.Tensor:
    """delta_h for a strength or for coefficient rows, in one batched evaluation of each function.

    ``coeffs``: a number (strength; negative reverses the edit), a vector with one strength per row (N,), or
    per-row coefficients over a Composition's functions (N, n).
    """
    if isinstance(coeffs, (int, float)):
        return coeffs * hfunc(h, emb, t)
    c = torch.as_tensor(coeffs, device=h.device, dtype=h.dtype)
    N = h.shape[0]
    if c.dim() == 0:
        return c * hfunc(h, emb, t)
    if c.dim() == 1 and c.numel() == N:
        return c.view(N, 1, 1, 1) * hfunc(h, emb, t)
    if c.dim() == 2 and c.shape[0] == N:
        if isinstance(hfunc, Composition):
            return hfunc.combine(hfunc.components(h, emb, t), c)
        if c.shape[1] == 1:
            return c.view(N, 1, 1, 1) * hfunc(h, emb, t)
    raise ValueError(
        f"coefficients of shape {tuple(c.shape)} do not fit {N} rows and {n_components(hfunc)} function(s): "
        "pass a number, one value per row (N,), or one coefficient row per batch row (N, n)"
    )
