"""What every metric shares: a mean over images whose sums merge exactly across DDP ranks, and a holder that keeps a
network out of the metric's state."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torchmetrics import Metric


class HeldCallable:
    """Holds a network/callable so that nn.Module does not register it (its weights stay out of the metric's
    state_dict and of DDP's sync); ``Metric._apply`` moves it along when it is a module."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *a, **kw):
        return self.fn(*a, **kw)


class MeanMetric(Metric):
    """sum / count over images, both summed across processes."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: torch.Tensor) -> None:
        values = values.detach().reshape(-1).to(torch.float64)
        self.total = self.total + values.sum().to(self.total.device)
        self.count = self.count + values.numel()

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.count

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for v in self.__dict__.values():
            if isinstance(v, HeldCallable) and isinstance(v.fn, torch.nn.Module):
                v.fn._apply(fn)
        return out


def check_pairs(x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
    if x_src.shape != x_edit.shape:
        raise ValueError(f"source {tuple(x_src.shape)} and edit {tuple(x_edit.shape)} must have the same shape")
