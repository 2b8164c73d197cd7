"""The windows of a composition whose h-functions were trained on different edit intervals: each acts in its own
[t0, t_edit], on a walk that covers them all, at its trained effect per unit of t."""
from __future__ import annotations

from typing import Any, Mapping, Sequence

from torch import nn

from .modules import TimeWindow

__all__ = ["own_intervals", "own_intervals_walk", "step_scales", "in_own_intervals"]


def own_intervals(edits: Sequence[Mapping[str, Any]]) -> list[dict[str, int]] | None:
    """The stored edit settings of several h-functions -> one window [t0, t_edit] per function when they differ
    (None when they agree or one has no t_edit): a composition then lets each act where it was trained. ``n_needed``
    is the step count a walk from the highest t0 needs to keep that function's steps per unit of t."""
    if len(edits) < 2 or any(e.get("t_edit") is None for e in edits):
        return None
    spans = [(int(e.get("t0", 999)), int(e["t_edit"]), int(e.get("n_gen", 40))) for e in edits]
    if len({s[:2] for s in spans}) == 1:
        return None
    t0_max = max(t0 for t0, _, _ in spans)
    return [{"t0": t0, "t_edit": te, "n_gen": n, "n_needed": -(-n * t0_max // t0)} for t0, te, n in spans]


def own_intervals_walk(windows: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """The walk such a composition needs: from the highest t0 to the lowest t_edit, at the densest function's steps."""
    n = max(w["n_needed"] for w in windows)
    return {"t0": max(w["t0"] for w in windows), "t_edit": min(w["t_edit"] for w in windows), "n_inv": n, "n_gen": n}


def step_scales(windows: Sequence[Mapping[str, int]], t0: int, n_gen: int) -> list[float]:
    """Per window, the factor on its function's coefficient that keeps the trained effect per unit of t on a walk of
    ``n_gen`` steps from ``t0`` (delta_h acts once per step: new t per step / trained t per step)."""
    return [(t0 / n_gen) / (w["t0"] / w["n_gen"]) for w in windows]


def in_own_intervals(fns: Sequence[nn.Module], windows: Sequence[Mapping[str, int]]) -> list[nn.Module]:
    """Each function switched on only in its window (``own_intervals``)."""
    return [TimeWindow(f, w["t0"], w["t_edit"]) for f, w in zip(fns, windows)]
