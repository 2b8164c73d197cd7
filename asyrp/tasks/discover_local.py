"""The local methods of discover.py: ``method=region`` (where an attribute's edit concentrates, written as a mask
file, asyrp.masks) and ``method=loco`` (LOCO Edit's masked x_t direction at one timestep, written as an x-space
direction file that edit.py applies with plan.mode=x_shift). Neither uses the oracle: the region comes from CLIP's
gradient or from the change of P_t under a given edit; LOCO's candidate is chosen by CLIP's text direction.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..ops.errors import AsyrpUserError

log = logging.getLogger(__name__)
LOCAL = ("loco", "region")
SOURCES = ("clip_grad", "edit")


def check_local(cfg: DictConfig, image_size: int) -> dict[str, Any]:
    """The local method's inputs, checked before any network pass: LOCO's mask and timestep, the region's source."""
    from ..config import as_int
    from ..masks import read_mask

    m = cfg.method
    if m.name == "loco":
        if not m.get("mask"):
            raise AsyrpUserError(
                "method=loco needs a region: pass method.mask=<mask.pt> (python discover.py method=region writes one)"
            )
        t = as_int(m.t, "method.t", 1)
        if t > 999:
            raise AsyrpUserError(f"method.t={t} is outside the schedule: LOCO edits x_t at one t in 1..999")
        if int(m.r_null) < 1 or int(m.k) < 1:
            raise AsyrpUserError("method.k and method.r_null must be >= 1 (candidates; outside null-space basis)")
        return {"mask": read_mask(m.mask, image_size)}
    if m.source not in SOURCES:
        raise AsyrpUserError(f"method.source={m.source!r} must be one of {', '.join(SOURCES)}")
    if m.source == "edit" and not m.get("checkpoint"):
        raise AsyrpUserError(
            "method.source=edit measures where an edit changes P_t: pass method.checkpoint=<hfunction.pt>"
        )
    if not 0 < float(m.threshold) < 1:
        raise AsyrpUserError(f"method.threshold={m.threshold} must lie in (0, 1) (a fraction of the map's maximum)")
    return {}


def local_plan(cfg: DictConfig, plan):
    """The walk the method needs. loco: invert to t and move x_t there only (t0 = t_edit = t, x_shift). region with
    source=edit: the h-function file's own stored steps, without boosting."""
    from ..hfunctions.files import read_hfunction_file

    m = cfg.method
    if m.name == "loco":
        t = int(m.t)
        return replace(plan, t0=t, t_edit=t, t_boost=min(plan.t_boost or 0, t), mode="x_shift")
    if m.source == "edit":
        stored = dict(read_hfunction_file(m.checkpoint).get("edit") or {})
        keys = ("n_inv", "n_gen", "t0", "t_edit", "spacing", "mode")
        return replace(plan, t_boost=0, **{k: stored[k] for k in keys if stored.get(k) is not None})
    return plan


def text_score(cfg: DictConfig):
    """(x_ref, x_edit) -> mean cosine between the CLIP image direction and the attribute's text direction."""
    from .. import build
    from ..losses import direction_cosine

    clip = build.clip(cfg.clip)
    att = build.attribute(cfg.attribute)
    text_dir = clip.text_direction(att["source"], att["target"])

    @torch.no_grad()
    def score(x_ref: torch.Tensor, x_edit: torch.Tensor) -> torch.Tensor:
        return direction_cosine(clip.encode_image(x_edit), clip.encode_image(x_ref), text_dir).mean()

    return score, clip, text_dir


def find_loco(cfg: DictConfig, backbone, a, plan, x_t: torch.Tensor, mask: torch.Tensor) -> tuple[list, dict]:
    """LOCO's candidates on the first method.n_images images at t, and the one CLIP's text direction picks (sign
    applied), written as loco_00."""
    from ..directions.loco import choose_by_text, loco_directions

    m = cfg.method
    n = min(int(m.n_images), x_t.shape[0])
    candidates, cost = loco_directions(
        backbone,
        a,
        x_t[:n],
        int(m.t),
        mask,
        k=int(m.k),
        r_null=int(m.r_null),
        iters=int(m.iters),
        tol=float(m.tol),
        seed=int(cfg.seed),
    )
    score, _, _ = text_score(cfg)
    n_choose = min(int(m.choose_images), x_t.shape[0])
    seeds = [int(cfg.seed) + i for i in range(n_choose)]
    d, scores = choose_by_text(backbone, a, plan, x_t[:n_choose], candidates, score, float(m.choose_strength), seeds)
    log.info("loco: CLIP text scores of the candidates (+s, -s each): %s", ", ".join(f"{s:.3f}" for s in scores))
    return [replace(d, index=0, meta=dict(d.meta, candidate=d.index))], cost


def find_region(cfg: DictConfig, backbone, a, plan, x_T: torch.Tensor, x0: torch.Tensor) -> tuple[Any, Any, str]:
    """(score map, mask, source description) of method=region."""
    from ..directions.regions import clip_gradient_map, region_mask

    m = cfg.method
    if m.source == "clip_grad":
        _, clip, text_dir = text_score(cfg)
        score = clip_gradient_map(clip.encode_image, x0, text_dir, batch_size=int(cfg.batch_size))
        what = f"clip_grad: |d<E_I(x), text direction>/dx| over {x0.shape[0]} images"
    else:
        score = _p_t_change(cfg, backbone, a, plan, x_T)
        what = (
            f"edit: |P_t^edit - P_t| of {Path(str(m.checkpoint)).name} at strength {m.strength}, t in "
            f"[{plan.t_edit}, {plan.t0}], over {x_T.shape[0]} images"
        )
    try:
        mask = region_mask(score, threshold=float(m.threshold), blur=int(m.blur), grow=int(m.grow))
    except ValueError as err:
        raise AsyrpUserError(f"method=region: {err}") from err
    return score, mask, f"{what}; blur {m.blur}, threshold {m.threshold} of the maximum, grown {m.grow} px"


@torch.no_grad()
def _p_t_change(cfg: DictConfig, backbone, a, plan, x_T: torch.Tensor) -> torch.Tensor:
    from .. import build
    from ..directions.regions import p_t_change_map
    from ..samplers import edit

    f, _ = build.trained_hfunction(cfg.method.checkpoint, backbone, cfg.arch.get("name"))
    total, bs = 0.0, int(cfg.batch_size)
    for lo in range(0, x_T.shape[0], bs):
        xb = x_T[lo : lo + bs]
        B = xb.shape[0]
        seeds = [int(cfg.seed) + lo + i for i in range(B)]
        walk = edit(
            backbone,
            None,
            f,
            a=a,
            plan=plan,
            strength=[0.0, float(cfg.method.strength)],
            seeds=seeds,
            x_T=xb,
            return_trajectory=True,
        )
        ref = [(t, x[:B], P[:B]) for t, x, P in walk.trajectory]
        edited = [(t, x[B:], P[B:]) for t, x, P in walk.trajectory]
        total = total + p_t_change_map(edited, ref, plan.t_edit) * B
    return total / x_T.shape[0]


def write_region(cfg: DictConfig, out: Path, score, mask, source: str, x0: torch.Tensor, cost) -> dict[str, Any]:
    """mask.pt (asyrp.masks), region.png (mean face | normalised map | mask | face inside the mask), region.json."""
    from ..directions.regions import normalised
    from ..grid import columns_grid, save_grid
    from ..masks import save_mask
    from ..ops.io import atomic_write_json

    attribute = str(cfg.attribute.get("name"))
    path = save_mask(mask, out / "mask.pt", source=f"discover.py method=region, {source}", attribute=attribute)
    face = x0.mean(0, keepdim=True)
    as_image = lambda v: (v * 2 - 1).expand(1, 3, *v.shape[-2:])  # noqa: E731 ([0, 1] map -> grey image)
    cols = [
        ("mean face", face),
        ("score map", as_image(normalised(score))),
        ("mask", as_image(mask)),
        ("inside", face * mask + (1 - mask) * -1),
    ]
    save_grid(out / "region.png", columns_grid(cols, [attribute], title=f"region of {attribute}: {source[:60]}"))
    summary = {
        "method": "region",
        "attribute": attribute,
        "source": source,
        "mask": path.name,
        "coverage": float(mask.mean()),
        "input_dir": str(cfg.input_dir),
        "images": int(x0.shape[0]),
        "cost": cost,
    }
    atomic_write_json(summary, out / "region.json")
    log.info("region: %s covers %.1f%% of the image (%s)", path, 100 * summary["coverage"], source)
    return {"output_dir": out, "files": [path], "summary": summary}
