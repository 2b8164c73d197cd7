"""``discover(cfg)``: find h-space directions on a folder of images and write them as h-function files, a grid
(rows: directions, columns: strengths) and directions.json (labels from the oracle, cost). See conf/discover.yaml.

Every user-fixable problem is raised as one ``AsyrpUserError`` before any network pass or output file.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..ops import faults
from ..ops.claims import claim_discover_dir, holds_claims, run_fingerprint
from ..ops.errors import AsyrpUserError
from .discover_local import LOCAL, check_local, find_loco, find_region, local_plan, write_region

log = logging.getLogger(__name__)
METHODS = ("pca", "jacobian", "mean_diff", "boundary", "loco", "region")
SUPERVISED = ("mean_diff", "boundary")


def _plain(cfg: Any) -> Any:
    from ..config import plain

    return plain(cfg)


def check_discover_config(cfg: DictConfig) -> dict[str, Any]:
    """The method, step settings, images and (supervised) labels, checked; returns the files and their labels."""
    from ..checks import check_arch, check_complete, check_perf
    from ..config import as_int
    from ..data.images import scan_images
    from ..plan import plan_of

    check_complete(cfg)
    check_perf(cfg.get("perf"))
    m = cfg.method
    if m.get("name") not in METHODS:
        raise AsyrpUserError(f"method.name={m.get('name')!r} is not one of {', '.join(METHODS)}: pass method=<name>")
    plan_of(cfg.plan)
    for key in ("k", "n_images", "iters", "n_timesteps"):
        if m.get(key) is not None:
            as_int(m.get(key), f"method.{key}", 1)
    n = as_int(cfg.n_images, "n_images", 2)
    if cfg.labels not in ("writer", "oracle"):
        raise AsyrpUserError(f"labels={cfg.labels!r} must be writer (the data writer's attributes.json) or oracle")
    if cfg.judge not in ("auto", "none"):
        raise AsyrpUserError(f"judge={cfg.judge!r} must be auto (the synthfaces oracle when it is there) or none")
    if m.name == "pca" and int(m.k) > n - 1:
        raise AsyrpUserError(
            f"method.k={m.k} principal components need at least {int(m.k) + 1} images: raise "
            f"n_images (now {n}) or lower method.k"
        )
    if m.name == "jacobian":
        region_of(cfg)  # a bad mask (size, values) fails before any network pass
    check_arch(cfg.arch)
    size = int(
        (cfg.arch.get("config") or {}).get("image_size") or (cfg.arch.get("config") or {}).get("sample_size") or 32
    )
    files, skipped = scan_images(cfg.input_dir, n, size, what="input_dir")
    labels = None
    local = check_local(cfg, size) if m.name in LOCAL else {}
    if m.name in SUPERVISED:
        target = cfg.attribute.get("oracle_target")
        if not target or "=" not in str(target):
            raise AsyrpUserError(
                f"method={m.name} needs attribute.oracle_target (head=value, e.g. mouth=smiling) to "
                f"label images; attribute {cfg.attribute.get('name')!r} has none"
            )
        if cfg.labels == "writer":
            from ..data.labels import writer_labels

            labels = writer_labels(Path(str(cfg.input_dir)), files, str(target))
    return {"files": files, "skipped": skipped, "labels": labels, "image_size": size, **local}


def _find(cfg: DictConfig, backbone, walk, labels: torch.Tensor | None) -> tuple[list, dict]:
    from ..directions import boundary_direction, jacobian_directions, mean_diff_direction, pca_directions

    m = cfg.method
    try:
        if m.name == "pca":
            return pca_directions(walk.h, int(m.k), pooled=bool(m.pooled)), {}
        if m.name == "jacobian":
            ts = walk.timesteps
            n_t = min(int(m.n_timesteps), len(ts))
            pick = sorted({ts[round(i * (len(ts) - 1) / max(n_t - 1, 1))] for i in range(n_t)}, reverse=True)
            return jacobian_directions(
                backbone,
                walk,
                int(m.k),
                of=str(m.of),
                n_images=int(m.n_images),
                timesteps=pick,
                iters=int(m.iters),
                tol=float(m.tol),
                seed=int(cfg.seed),
                region=region_of(cfg),
            )
        if m.name == "mean_diff":
            return [mean_diff_direction(walk.h, labels)], {}
        ts = walk.timesteps
        t_m = int(m.t_m) if m.get("t_m") is not None else ts[len(ts) // 2]
        if t_m not in walk.h:
            t_m = min(ts, key=lambda t: abs(t - t_m))
        return [boundary_direction(walk.h, labels, t_m, l2=float(m.l2), val_fraction=float(m.val_fraction))], {}
    except ValueError as err:
        raise AsyrpUserError(f"method={m.name}: {err}") from err


def region_of(cfg: DictConfig) -> torch.Tensor | None:
    """method.outside (a region mask file or PNG) at the arch's image size: the decoder Jacobian then finds the
    directions inside the region that move what lies outside it, which a constraint holds; None when unset."""
    from ..masks import read_mask

    path = cfg.method.get("outside")
    if not path:
        return None
    arch = cfg.arch.get("config") or {}
    return read_mask(str(path), int(arch.get("image_size") or arch.get("sample_size") or 32))["mask"]


@torch.no_grad()
def _edit_rows(backbone, a, x_T, d, strengths, plan, cfg) -> torch.Tensor:
    """(K, M, 3, H, W): the M images edited along direction d at each strength (one inversion, batched)."""
    from ..directions.files import direction_hfunction
    from ..samplers import edit

    out = edit(
        backbone,
        None,
        direction_hfunction(d),
        a=a,
        plan=plan,
        strength=list(strengths),
        seeds=[int(cfg.seed) + i for i in range(x_T.shape[0])],
        x_T=x_T,
    )
    return out.x_edit.cpu()


@holds_claims
def discover(cfg: DictConfig, oracle: Any = None) -> dict[str, Any]:
    """Find directions with ``cfg.method`` on ``cfg.input_dir``; write <name>.pt, grid.png, directions.json. The
    output folder is claimed for the run like train's and edit's (asyrp.ops.claims): a second discover there is
    refused in one line while this one runs.

    ``oracle``: an attribute oracle (``judge(images)`` -> class index per head, ``classes`` -> class names per head)
    that labels what each direction changes and, with labels=oracle, labels the images; the entry point passes the
    synthfaces one (discover.py), so this module does not depend on the toy world.
    """
    from .. import build
    from ..data.cache import InversionCache, Source, load_entry
    from ..directions import record_walk
    from ..perf import PassCounter

    req = check_discover_config(cfg)
    out = Path(str(cfg.output_dir)).expanduser()
    faults.check_writable(out, "output_dir")  # read-only / unwritable folders: one line, exit 4, before any work
    faults.check_writable(cfg.cache_dir, "cache_dir")
    faults.set_resume("rerun the same command: finished inversion-cache entries are reused")
    claim_discover_dir(out, run_fingerprint(cfg), bool(cfg.get("overwrite", False)))
    torch.manual_seed(int(cfg.seed))
    backbone = build.backbone(cfg.arch, perf=cfg.get("perf"))
    a = build.alpha_bar(cfg.arch)
    oracle = _oracle(cfg, oracle)
    plan, _ = build.plan(cfg)
    if cfg.method.name in LOCAL:
        plan = local_plan(cfg, plan)  # loco: x_t at one t; region of an edit: that file's own steps
    cache = InversionCache(str(cfg.cache_dir), backbone, a, plan, image_size=req["image_size"], guard=faults.GUARD)
    sources = [Source(id=p.name, path=p) for p in req["files"]]
    t_start = time.perf_counter()
    with PassCounter(backbone) as counter:
        counter.phase = "invert"
        cached = len(sources) - len(cache.missing(sources))
        entries = [load_entry(p) for p in cache.build(sources)]
        x_T = torch.stack([e["x_T"] for e in entries])
        counter.phase = "walk"
        local = cfg.method.name in LOCAL  # they walk only what they need
        walk = None if local else record_walk(backbone, x_T, a, plan, batch_size=int(cfg.batch_size))
        labels = req["labels"]
        if labels is None and cfg.method.name in SUPERVISED:
            labels = _oracle_labels_of(cfg, oracle, torch.stack([e["x0"] for e in entries]))
        counter.phase = "find"
        if cfg.method.name == "region":
            x0 = torch.stack([e["x0"] for e in entries])
            region = find_region(cfg, backbone, a, plan, x_T, x0)
        elif cfg.method.name == "loco":
            directions, extra_cost = find_loco(cfg, backbone, a, plan, x_T, req["mask"]["mask"])
        else:
            directions, extra_cost = _find(cfg, backbone, walk, labels)
    if cfg.method.name == "region":
        return write_region(cfg, out, *region, x0, _cost(counter, t_start, cached, len(sources), {}))
    cost = _cost(counter, t_start, cached, len(sources), extra_cost)
    log.info(
        "%s: %d direction(s) from %d images in %.1f s (%s)",
        cfg.method.name,
        len(directions),
        len(sources),
        cost["seconds"],
        cost["passes"],
    )
    return _write(cfg, out, backbone, a, plan, x_T, directions, oracle, cost, req)


def _cost(counter, t_start: float, cached: int, n: int, extra: Mapping[str, Any]) -> dict[str, Any]:
    passes = {
        ph: sum(c.rows for c in counter.calls if c.kind == "decode" and c.phase == ph)
        for ph in ("invert", "walk", "find")
    }
    return {
        "seconds": time.perf_counter() - t_start,
        "passes": passes,
        "inversions_cached": cached,
        "images": n,
        **{k: v for k, v in extra.items() if k != "iters"},
    }


def _oracle(cfg: DictConfig, oracle: Any):
    """The oracle passed in, unless judge=none; labels=oracle without one is an error."""
    if cfg.judge == "none":
        oracle = None
    if oracle is None and cfg.labels == "oracle" and cfg.method.name in SUPERVISED:
        raise AsyrpUserError(
            "labels=oracle needs the synthfaces oracle (arch=synthfaces, judge=auto): pass labels=writer"
        )
    return oracle


def _oracle_labels_of(cfg: DictConfig, oracle, x0: torch.Tensor) -> torch.Tensor:
    from ..metrics import parse_target

    key, value = parse_target(str(cfg.attribute.oracle_target), oracle.classes)
    y = oracle.judge(x0)[key] == value
    if y.all() or not y.any():
        raise AsyrpUserError(
            f"the oracle reads {'all' if y.all() else 'none'} of the {len(y)} images as "
            f"{cfg.attribute.oracle_target}: a supervised direction needs both classes"
        )
    return y


def _write(cfg: DictConfig, out: Path, backbone, a, plan, x_T, directions, oracle, cost, req) -> dict[str, Any]:
    """Edit the first images along every direction at each strength (grid + oracle labels), then write the files."""
    from ..directions import oracle_labels
    from ..directions.files import save_direction
    from ..grid import save_grid, table_grid
    from ..ops.io import atomic_write_json
    from ..plan import stored_edit

    strengths = sorted({0.0, *(float(s) for s in cfg.method.strengths)})
    n_label = min(int(cfg.label_images), x_T.shape[0]) if oracle is not None else 0
    n_grid = min(int(cfg.grid_images), x_T.shape[0])
    stored = stored_edit(plan, 1.0)
    rows, row_labels, records = [], [], []
    t_edit_start = time.perf_counter()
    for d in directions:
        x = _edit_rows(backbone, a, x_T[: max(n_label, n_grid)], d, strengths, plan, cfg)  # (K, M, 3, H, W)
        rows += [x[:, i] for i in range(n_grid)]
        row_labels += [f"{d.name}, image {i}" for i in range(n_grid)]
        lab = None
        if n_label:
            ref = x[strengths.index(0.0), :n_label]
            lab = oracle_labels(oracle, ref, {s: x[k, :n_label] for k, s in enumerate(strengths)})
        extra = {
            "label": lab["label"] if lab else None,
            "labels": lab,
            "cost": cost,
            "found_on": {"input_dir": str(cfg.input_dir), "n_images": x_T.shape[0]},
        }
        if cfg.method.name in SUPERVISED:
            extra["attribute"] = str(cfg.attribute.oracle_target)
            extra["label"] = extra["attribute"]
        if cfg.method.name in LOCAL:  # chosen by the attribute's CLIP texts: evaluate.py and the sweep read them
            extra["clip_attribute"] = {k: _plain(cfg.attribute.get(k)) for k in ("name", "source", "target")}
        path = save_direction(d, out / f"{d.name}.pt", backbone, arch=_plain(cfg.arch), edit=stored, extra=extra)
        records.append(
            {
                "file": path.name,
                "name": d.name,
                "label": extra["label"],
                **({k: lab[k] for k in ("main_head", "others_moved", "disentanglement")} if lab else {}),
                **{k: v for k, v in d.meta.items() if isinstance(v, (int, float, str, bool))},
            }
        )
        log.info("%s: %s", path, extra["label"] or "(no oracle)")
    save_grid(
        out / "grid.png",
        table_grid(
            [list(r) for r in rows],
            [f"strength {s:g}" for s in strengths],
            row_labels,
            title=f"discover.py {cfg.method.name}: rows = direction, image; columns = "
            "strength along the direction (0 = reconstruction)",
        ),
    )
    summary = {
        "method": cfg.method.name,
        "method_config": _plain(cfg.method),
        "arch": cfg.arch.get("name"),
        "input_dir": str(cfg.input_dir),
        "images": [p.name for p in req["files"]],
        "skipped": [{"path": str(p), "reason": r} for p, r in req["skipped"]],
        "labels_from": (cfg.labels if cfg.method.name in SUPERVISED else None),
        "judge": "synthfaces oracle" if oracle is not None else None,
        "label_images": n_label,
        "grid": {
            "file": "grid.png",
            "rows": f"{len(directions)} directions x {n_grid} images",
            "columns": [f"strength {s:g}" for s in strengths],
        },
        "edit": stored,
        "cost": cost,
        "label_and_grid_seconds": time.perf_counter() - t_edit_start,
        "directions": records,
    }
    atomic_write_json(summary, out / "directions.json")
    return {"output_dir": out, "files": [out / r["file"] for r in records], "summary": summary}
