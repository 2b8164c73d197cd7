"""Directions as h-function files: the ``global`` / ``global_per_t`` kinds of asyrp.hfunctions in the project's
``hfunction.pt`` format (asyrp.hfunctions.files), so edit.py, ``load_hfunction_checkpoint``, ``Composition`` and ``strength`` take them as
they take a trained h-function. The file also carries ``direction``: method, index, timesteps, labels, cost."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..hfunctions.modules import GlobalDirection
from .finders import Direction


def direction_hfunction(d: Direction) -> GlobalDirection:
    """The direction as a ``GlobalDirection`` (a per-timestep table when it has timesteps), in eval mode."""
    shape = tuple(d.delta_h.shape[1:] if d.timesteps is not None else d.delta_h.shape)
    g = GlobalDirection(shape, timesteps=d.timesteps, init_std=0.0)
    if d.timesteps is not None:  # the table is stored by ascending t
        order = sorted(range(len(d.timesteps)), key=lambda i: d.timesteps[i])
        g.delta_h.data.copy_(d.delta_h[order])
    else:
        g.delta_h.data.copy_(d.delta_h)
    return g.eval().requires_grad_(False)


def direction_payload(
    d: Direction, backbone, *, arch: Mapping[str, Any], edit: Mapping[str, Any], extra: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    from ..hfunctions.files import payload

    g = direction_hfunction(d)
    hf = (
        {"kind": "global", "init_std": 0.0}
        if d.timesteps is None
        else {"kind": "global_per_t", "timesteps": sorted(int(t) for t in d.timesteps), "init_std": 0.0}
    )
    if d.space != "h":
        hf["space"] = d.space
    label = (extra or {}).get("label")
    return payload(
        g,
        {
            "hfunction": hf,
            "arch": {k: arch.get(k) for k in ("name", "family", "beta_schedule")},
            "h_shape": [int(v) for v in backbone.h_shape],
            "emb_dim": int(backbone.emb_dim),
            "attribute": dict(
                (extra or {}).get("clip_attribute") or {"name": label or d.name, "source": [], "target": []}
            ),
            "edit": dict(edit),
            "direction": {
                "method": d.method,
                "index": d.index,
                "name": d.name,
                "timesteps": None if d.timesteps is None else [int(t) for t in d.timesteps],
                **_plain(d.meta),
                **_plain(dict(extra or {})),
            },
        },
    )


def save_direction(
    d: Direction,
    path: str | Path,
    backbone,
    *,
    arch: Mapping[str, Any],
    edit: Mapping[str, Any],
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Write the direction as an h-function file (atomically); ``edit`` holds the step settings edit.py reuses."""
    from ..hfunctions.files import save_hfunction

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_hfunction(direction_payload(d, backbone, arch=arch, edit=edit, extra=extra), path)
    return path


def _plain(obj: Any) -> Any:
    """Metadata as plain lists / dicts / numbers / strings (what a weights-only load accepts)."""
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj
