"""A fixed layer after f(h, t) that keeps delta_h in an allowed subspace (issue 24): edits that stay on their attribute.

``Constrained(fn, basis=, timesteps=, mask=)`` returns delta_h = Pi_t(M * fn(h, emb, t)):

- ``mask`` M (h's spatial size, values in [0, 1]): delta_h is weighed per cell of h's grid, so the change stays in the
  attribute's region (a hard 0/1 mask: zero outside);
- ``basis`` (T, k, D) orthonormal rows per listed timestep (``timesteps``, ascending; one row set for every t when
  ``timesteps`` is None): Pi_t removes delta_h's component in their span, read at the nearest listed t (ties to the
  smaller, as ``GlobalDirection``). The rows span M * b for the directions b to keep (``orthonormal_rows``), so with a
  hard mask delta_h is both zero outside the region and orthogonal to every b.

Nothing in it trains: the buffers are stored in ``hfunction.pt`` with the weights, so training (the CLIP loss only
moves f inside the allowed subspace) and every edit path (edit.py, the editor, compositions) apply the same map.
``stored_constraints`` / ``from_stored`` are what the file's config keeps to rebuild it (shapes and where the
buffers came from; the buffers themselves are in the state dict).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from .modules import HFunction

RANK_TOL = 1e-6  # a direction whose part outside the span of the others is below this share of the largest: dependent


def orthonormal_rows(rows: torch.Tensor, what: str) -> torch.Tensor:
    """(k, D) rows -> (k, D) orthonormal rows of the same span (float64 SVD). ValueError when they do not span k
    dimensions (a zero or repeated direction) or span all of h (nothing would be left to edit)."""
    k, D = rows.shape
    if k >= D:
        raise ValueError(f"{what}: {k} directions span all {D} dimensions of h; nothing would be left to edit")
    _, S, Vh = torch.linalg.svd(rows.double(), full_matrices=False)
    if float(S[0]) == 0.0 or float(S[-1]) < RANK_TOL * float(S[0]):
        rank = int((S > RANK_TOL * S[0]).sum()) if float(S[0]) > 0 else 0
        raise ValueError(
            f"{what}: the {k} directions span only {rank} dimension(s) (rank deficient: a zero, repeated or dependent "
            "direction); list each direction once"
        )
    return Vh.float()


class Constrained(HFunction):
    """delta_h = Pi_t(M * fn(h, emb, t)): ``fn`` trains, the projection and the mask are fixed buffers."""

    def __init__(
        self,
        fn: nn.Module,
        *,
        basis: torch.Tensor | None = None,
        timesteps: Sequence[int] | None = None,
        mask: torch.Tensor | None = None,
        info: Mapping[str, Any] | None = None,
    ):
        super().__init__()
        if basis is None and mask is None:
            raise ValueError("Constrained needs a basis to project off, a mask, or both")
        if basis is not None and basis.dim() != 3:
            raise ValueError(f"Constrained basis must be (T, k, D), got {tuple(basis.shape)}")
        ts = None if timesteps is None else torch.tensor(sorted(int(t) for t in timesteps), dtype=torch.long)
        if basis is not None and basis.shape[0] != (1 if ts is None else len(ts)):
            raise ValueError(f"Constrained basis has {basis.shape[0]} row sets for {0 if ts is None else len(ts)} t")
        self.fn = fn
        self.register_buffer("basis", None if basis is None else basis.detach().float().clone())
        self.register_buffer("timesteps", ts)
        self.register_buffer("mask", None if mask is None else mask.detach().float().reshape(1, 1, *mask.shape[-2:]))
        self.info = {k: dict(v) for k, v in (info or {}).items()}

    def _rows(self, t: Any, n: int) -> torch.Tensor:
        """The (n, k, D) basis row set of each of n rows at timestep(s) t (nearest listed t)."""
        if self.timesteps is None:
            return self.basis[0].expand(n, *self.basis.shape[1:])
        if t is None:
            raise ValueError("a per-timestep projection needs t (on the 1000-step scale)")
        tv = torch.as_tensor(t, device=self.timesteps.device).reshape(-1).to(torch.float64)
        tv = tv.expand(n) if tv.numel() == 1 else tv
        return self.basis[(self.timesteps.double()[None, :] - tv[:, None]).abs().argmin(dim=1)]

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None) -> torch.Tensor:
        d = self.fn(h, emb, t)
        if self.mask is not None:
            d = d * self.mask.to(d.dtype)
        if self.basis is None:
            return d
        n = d.shape[0]
        B = self._rows(t, n).to(d.dtype)  # (n, k, D)
        flat = d.reshape(n, -1)
        coef = torch.einsum("nkd,nd->nk", B, flat)
        return (flat - torch.einsum("nk,nkd->nd", coef, B)).reshape(d.shape)

    def stored_constraints(self) -> dict[str, Any]:
        """What the file's ``hfunction.constraints`` keeps: the buffers' shapes and where they came from."""
        out: dict[str, Any] = {}
        if self.basis is not None:
            ts = None if self.timesteps is None else [int(v) for v in self.timesteps]
            out["project"] = {**self.info.get("project", {}), "rank": int(self.basis.shape[1]), "timesteps": ts}
        if self.mask is not None:
            out["mask"] = {**self.info.get("mask", {}), "size": [int(v) for v in self.mask.shape[-2:]]}
        return out

    def extra_repr(self) -> str:
        parts = []
        if self.basis is not None:
            parts.append(f"project off {self.basis.shape[1]} directions at {self.basis.shape[0]} timestep(s)")
        if self.mask is not None:
            parts.append(f"mask {tuple(self.mask.shape[-2:])}")
        return ", ".join(parts)


def from_stored(fn: nn.Module, spec: Mapping[str, Any], h_shape: Sequence[int]) -> Constrained:
    """The layer of a stored ``hfunction.constraints`` with zero buffers of the stored shapes (the file's state dict
    fills them, strictly)."""
    D = int(torch.tensor([int(v) for v in h_shape]).prod())
    basis = ts = mask = None
    project, masked = spec.get("project"), spec.get("mask")
    if project:
        ts = project.get("timesteps")
        basis = torch.zeros(1 if ts is None else len(ts), int(project["rank"]), D)
    if masked:
        mask = torch.zeros(*[int(v) for v in masked["size"]])
    info = {
        k: {kk: vv for kk, vv in dict(v).items() if kk not in ("rank", "timesteps", "size")}
        for k, v in spec.items()
        if v
    }
    return Constrained(fn, basis=basis, timesteps=ts, mask=mask, info=info)
