"""h (and x_t) along the unedited DDIM walk, recorded by the sampler itself (no second walk).

``HRecorder`` is an h-function that returns delta_h = 0 and keeps the h it is shown; run through
``asyrp.samplers.edit`` in ``symmetric`` mode it sees exactly the h of the reconstruction walk, at no extra network
pass (symmetric decodes h + 0 once per step, like plain DDIM).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from ..hfunctions.modules import HFunction
from ..plan import EditPlan


class HRecorder(HFunction):
    """delta_h = 0; ``h[t]`` collects the (B, C, H, W) bottleneck seen at timestep t (CPU copies)."""

    def __init__(self):
        super().__init__()
        self.h: dict[int, torch.Tensor] = {}

    def forward(self, h: torch.Tensor, emb: torch.Tensor | None = None, t: Any = None) -> torch.Tensor:
        tt = int(torch.as_tensor(t).reshape(-1)[0])
        self.h[tt] = torch.cat([self.h[tt], h.detach().cpu()]) if tt in self.h else h.detach().cpu()
        return torch.zeros_like(h)


@dataclass
class Walk:
    """The unedited walk of N images from their inverted x_T: h and x_t at every timestep t >= t_min (descending
    keys), and its end point x_rec (the reconstruction)."""

    h: dict[int, torch.Tensor]
    x: dict[int, torch.Tensor]
    x_rec: torch.Tensor

    @property
    def timesteps(self) -> list[int]:
        return list(self.h)


@torch.no_grad()
def record_walk(backbone, x_T: torch.Tensor, a: torch.Tensor, plan: EditPlan, *, batch_size: int = 16) -> Walk:
    """Walk from ``x_T`` down ``plan``'s generation steps with ``asyrp.samplers.edit`` (no boosting) and keep h, x_t
    at every t >= plan.t_edit."""
    from ..samplers import edit

    rec = HRecorder()
    ends, xs = [], {}
    t_min = plan.t_edit
    walk = replace(plan, t_boost=0, mode="symmetric")  # symmetric: the recorder sees the unedited h, for free
    for lo in range(0, x_T.shape[0], batch_size):
        xt = x_T[lo : lo + batch_size]
        out = edit(
            backbone,
            None,
            rec,
            a=a,
            plan=walk,
            strength=1.0,
            seeds=list(range(lo, lo + xt.shape[0])),
            x_T=xt,
            return_trajectory=True,
        )
        ends.append(out.x_edit.cpu())
        for t, x_t, _ in out.trajectory:
            if t >= t_min:
                xs.setdefault(int(t), []).append(x_t.cpu())
    h = dict(sorted(rec.h.items(), reverse=True))
    return Walk(h=h, x={t: torch.cat(xs[t]) for t in h}, x_rec=torch.cat(ends))
