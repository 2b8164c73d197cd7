"""Constraints on delta_h from the ``constraint`` config group (conf/constraint): which sources make the fixed layer
``asyrp.hfunctions.constrained.Constrained`` after f(h, t), read and checked before any training.

- ``use``: none | project | mask | project_mask (what applies; the sources below may be set and left unused, so a
  sweep can switch constraints on and off with ``constraint.use=choice(...)``);
- ``directions``: h-direction files written by discover.py (global or per t), the attributes to keep: delta_h is
  projected off their span at every t (the direction of the nearest listed t);
- ``mask``: the attribute's region (a mask file of ``asyrp.masks``, or a PNG), area-resized to h's grid: delta_h is
  weighed by it, and the directions are masked alike before projecting (so a hard mask keeps both properties).

Every user-fixable problem is one ``AsyrpUserError`` naming the key and the fix: a file that is not a direction, a
direction of another backbone, the attribute's own direction, an empty list, directions that span h or are rank deficient.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .hfunctions.constrained import Constrained, orthonormal_rows
from .ops.errors import AsyrpUserError

USES = ("none", "project", "mask", "project_mask")


def constraint_parts(cfg: Mapping[str, Any] | None) -> tuple[list[str], str | None]:
    """(direction files, mask file) that apply under ``cfg.use``; ([], None) for none. Checks the group's values."""
    if not cfg:
        return [], None
    use = cfg.get("use", "none")
    if use not in USES:
        raise AsyrpUserError(f"constraint.use={use!r} is not one of {', '.join(USES)}: pass constraint=<one of them>")
    dirs = [str(p) for p in (cfg.get("directions") or [])] if "project" in use else []
    mask = cfg.get("mask") if "mask" in use else None
    if "project" in use and not dirs:
        raise AsyrpUserError(
            f"constraint.use={use} but constraint.directions is empty: list the direction files of the attributes to "
            "keep (python discover.py method=mean_diff dataset=synthfaces_labelled attribute=<attr> writes one)"
        )
    if "mask" in use and not mask:
        raise AsyrpUserError(
            f"constraint.use={use} but constraint.mask is not set: pass constraint.mask=<mask.pt from the region "
            "finder, or a grey PNG at the image size>"
        )
    return dirs, (str(mask) if mask else None)


def read_direction(path: str, backbone, arch_name: str | None, target: str | None) -> tuple[torch.Tensor, list | None]:
    """A direction file's table: ((T, D) rows by ascending t, timesteps) or ((1, D), None) for a global one."""
    from .hfunctions.files import FORMAT, read_hfunction_file

    obj = read_hfunction_file(path)
    kind = (obj.get("hfunction") or {}).get("kind") if isinstance(obj, Mapping) else None
    if not isinstance(obj, Mapping) or obj.get("format") != FORMAT or kind not in ("global", "global_per_t"):
        raise AsyrpUserError(
            f"constraint.directions: {path} is not an h-direction file (kind {kind!r}): pass files written by "
            "discover.py (global or per-t delta_h tables)"
        )
    arch = (obj.get("arch") or {}).get("name")
    if list(obj.get("h_shape") or []) != list(backbone.h_shape) or (arch and arch_name and arch != arch_name):
        raise AsyrpUserError(
            f"constraint.directions: {path} was found on arch {arch!r} (h {list(obj.get('h_shape') or [])}), not on "
            f"arch {arch_name!r} (h {list(backbone.h_shape)}): rerun discover.py with arch={arch_name}"
        )
    found = (obj.get("direction") or {}).get("attribute")
    if target and found and str(found) == str(target):
        raise AsyrpUserError(
            f"constraint.directions: {path} is the direction of {found}, the attribute being edited: projecting it "
            "off would remove the edit; list only the attributes to keep"
        )
    sd = obj["state_dict"]
    table = sd["delta_h"].detach().double()
    if kind == "global":
        return table.reshape(1, -1), None
    return table.reshape(table.shape[0], -1), [int(t) for t in sd["timesteps"]]


def _nearest(ts: Sequence[int] | None, t: int) -> int:
    """Index of the listed t nearest to t (ties to the smaller), as GlobalDirection reads a table; 0 for global."""
    if ts is None:
        return 0
    return min(range(len(ts)), key=lambda i: (abs(ts[i] - t), ts[i]))


def projection_basis(
    tables: Sequence[tuple[torch.Tensor, list | None]], paths: Sequence[str], mask: torch.Tensor | None, h_shape
) -> tuple[torch.Tensor, list[int] | None]:
    """(T, k, D) orthonormal rows per t of the union of the directions' timesteps (None: all global), spanning the
    masked directions M * b (with a hard mask, delta_h then stays zero outside and orthogonal to every b)."""
    listed = sorted({t for _, ts in tables if ts is not None for t in ts})
    weight = None if mask is None else mask.double().reshape(1, *mask.shape[-2:]).expand(*h_shape).reshape(-1)
    sets = []
    for t in listed or [None]:
        rows = torch.stack([tab[_nearest(ts, t) if t is not None else 0] for tab, ts in tables])
        rows = rows if weight is None else rows * weight
        what = (
            "constraint.directions " + ", ".join(Path(p).name for p in paths) + (f" at t={t}" if t is not None else "")
        )
        try:
            sets.append(orthonormal_rows(rows, what))
        except ValueError as err:
            raise AsyrpUserError(f"{err}{' (inside constraint.mask)' if mask is not None else ''}") from err
    return torch.stack(sets), (listed or None)


def constrain(fn: torch.nn.Module, cfg: Mapping[str, Any] | None, backbone, *, arch_name=None, target=None):
    """``fn`` behind the fixed layer the ``constraint`` group asks for (``fn`` itself for use=none)."""
    dirs, mask_file = constraint_parts(cfg)
    if not dirs and mask_file is None:
        return fn
    h_shape = [int(v) for v in backbone.h_shape]
    info: dict[str, dict[str, Any]] = {}
    mask = None
    if mask_file is not None:
        mask, info["mask"] = h_mask(mask_file, backbone)
    basis = ts = None
    if dirs:
        tables = [read_direction(p, backbone, arch_name, target) for p in dirs]
        basis, ts = projection_basis(tables, dirs, mask, h_shape)
        info["project"] = {"directions": [Path(p).name for p in dirs]}
    p = next(backbone.parameters(), None)
    layer = Constrained(fn, basis=basis, timesteps=ts, mask=mask, info=info)
    return layer if p is None else layer.to(device=p.device)


def h_mask(path: str, backbone) -> tuple[torch.Tensor, dict[str, Any]]:
    """The region file (or PNG) at the backbone's image size, area-resized to h's (h, w) grid, and what the file says
    about it. A mask of another size or outside [0, 1] is one error (asyrp.masks.read_mask)."""
    import torch.nn.functional as F

    from .masks import read_mask

    region = read_mask(path, int(backbone.image_size))
    m = F.interpolate(region["mask"][None, None], size=tuple(int(v) for v in backbone.h_shape[-2:]), mode="area")
    return m[0, 0], {"file": Path(path).name, "source": region["source"], "attribute": region["attribute"]}
