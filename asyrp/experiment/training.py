"""h-functions trained for the experiments through the project's normal path (asyrp.tasks.train on a composed
``train`` config), and what an edit does per step. ``exp`` is an asyrp.experiment.Experiment (shared.py imports this
module, not the other way)."""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from .options import ROOT, rel

log = logging.getLogger("experiments")


def train_overrides(exp: Any, attr: str, kind: str, n_train: int, epochs: int) -> list[str]:
    """The ``train`` config of an experiment's h-function: the experiment's backbone, CLIP, walk and interval, the
    attribute and kind, the run size's images and epochs, then --train-override."""
    args = exp.args
    over = [
        f"arch={args.arch}",
        f"clip={args.clip}",
        f"attribute={attr}",
        f"hfunction={kind}",
        "hfunction.seed=0",
        f"seed={args.seed}",
        f"plan.n_inv={exp.n_steps}",
        f"plan.n_gen={exp.n_steps}",
        f"model.n_iter={epochs}",
        f"plan.t0={exp.t0}",
        f"plan.t_edit={exp.t_edit}",
        f"plan.t_boost={exp.t_boost}",
        "logger=csv",
        "~callbacks.edit_grid",
        # progress: a bar on a terminal, timed lines (step, ETA, loss) in a log or pipe (asyrp.callbacks.ProgressLog)
        "++trainer.enable_progress_bar=true",
        "++trainer.enable_model_summary=false",
        f"dataset.cache_dir={exp.out.parent / '_cache'}",
    ]
    if args.checkpoint:
        over.append(f"arch.checkpoint={Path(args.checkpoint).resolve()}")
    if kind == "delta_block" and exp.backbone.h_channels % 32:
        over.append("hfunction.num_groups=8")
    train_images = args.train_images or (
        str(ROOT / "data" / "synthfaces" / "train") if args.arch == "synthfaces" else None
    )
    if train_images:
        over += [
            "dataset=synthfaces",
            f"dataset.path={Path(train_images).resolve()}",
            f"dataset.n_images={n_train}",
            f"dataset.image_size={exp.backbone.image_size}",
            f"dataset.batch_size={min(8, n_train)}",
            f"dataset.n_val={min(4, n_train)}",
        ]
    else:
        over += [
            "dataset=random_samples",
            f"dataset.n_images={n_train}",
            f"dataset.batch_size={min(8, n_train)}",
            f"dataset.n_val={min(2, n_train)}",
        ]
    return over + list(exp.extra_overrides) + list(args.train_override)


def train_hfunction(
    exp: Any,
    attr: str,
    kind: str = "delta_block",
    *,
    n_train: int | None = None,
    epochs: int | None = None,
    extra: Sequence[str] = (),
) -> Path:
    """Train (or reuse) an h-function with asyrp.tasks.train on a composed ``train`` config; returns hfunction.pt.

    ``kind`` is a conf/hfunction name: the h-space kinds, or eps_shift / x_shift (image-shaped directions, trained
    with ``extra`` overrides that set plan.mode to match). Same budget for every kind unless given: the run size's
    training images and epochs, the experiment's steps, the model config's optimiser; ``extra`` overrides come last (after
    --train-override). Cached next to the output folder, in <out>/../_hfunctions/<arch>/<attr>_<kind>_<size>_s<steps>
    (reused by every script writing next to it, unless --retrain); a training run of an arch checkpoint snapshot
    should get its own --out parent.
    """
    from ..config import compose
    from ..tasks.train import train

    n_train, epochs = n_train or exp.size["n_train"], epochs or exp.size["epochs"]
    overrides = [*train_overrides(exp, attr, kind, n_train, epochs), *extra]
    # the cache key covers the backbone snapshot and every override (recipe): another recipe never reuses this run
    key = "\n".join([str(exp.arch_cfg.get("checkpoint")), *overrides])
    ck = hashlib.sha1(key.encode()).hexdigest()[:6]
    tag = f"{attr}_{kind}_n{n_train}_e{epochs}_s{exp.n_steps}_{ck}"
    run_dir = exp.out.parent / "_hfunctions" / str(exp.arch_cfg.get("name")) / tag
    ckpt = run_dir / "checkpoints" / "hfunction.pt"
    if ckpt.is_file() and not exp.args.retrain:
        log.info("reusing %s", ckpt)
        return ckpt
    log.info("training %s (%s): %s", attr, kind, " ".join(overrides))
    t0 = time.time()
    metrics, _ = train(compose("train", overrides, output_dir=run_dir))
    (run_dir / "experiment_train.json").write_text(
        json.dumps({"overrides": overrides, "seconds": time.time() - t0, "metrics": metrics}, indent=1)
    )
    if not ckpt.is_file():
        raise SystemExit(f"training finished without {ckpt}")
    exp.notes.append(
        f"trained {attr} ({kind}) in {time.time() - t0:.0f} s: {rel(ckpt)} "
        f"(val/clip_direction {metrics.get('val/clip_direction', math.nan):.3f})"
    )
    return ckpt


# -- baseline directions (eps / x space, trained by train_hfunction) ----------------------------------------
def rescale_direction(g, norms: Mapping[int, float]) -> None:
    """Set every entry of a per-timestep GlobalDirection to the norm given for its timestep (in place)."""
    with torch.no_grad():
        for i, t in enumerate(g.timesteps.tolist()):
            n = g.delta_h[i].norm()
            if int(t) in norms and n > 0:
                g.delta_h[i].mul_(norms[int(t)] / n)


# -- measuring what an edit does per step ------------------------------------------------------------------------
@torch.no_grad()
def step_norms(exp: Any, x_T: torch.Tensor, hfunc, strength: float = 1.0) -> dict[int, dict[str, float]]:
    """Along the Asyrp trajectory from x_T: per editing step t, the mean over images of ||delta_h||,
    ||eps_edit - eps|| (what the shift does to P_t's noise) and of the resulting change of x_{t-1}
    sqrt(a_{t-1}) * sqrt(1 - a_t) / sqrt(a_t) * ||eps_edit - eps||."""
    from ..samplers import edit_eps
    from ..schedules import alpha_at

    res = exp.edit(x_T, hfunc, strength=strength, trajectory=True, batch_size=x_T.shape[0])
    seq = res.seq_gen
    out = {}
    down = list(reversed(seq))
    for i, (t, x_t, _) in enumerate(res.trajectory):
        if t < exp.t_edit:
            continue
        ee = edit_eps(exp.backbone, x_t, t, hfunc, strength=strength)
        a_t = alpha_at(exp.a, t)
        t_next = down[i + 1] if i + 1 < len(down) else -1
        a_n = alpha_at(exp.a, t_next)
        d_eps = (ee.eps_edit - ee.eps).flatten(1).norm(dim=1)
        # x_shift by dx moves x_{t-1} by ~ sqrt(a_{t-1} / a_t) dx: the same move as Asyrp's needs
        # ||dx|| = sqrt(1 - a_t) ||eps_edit - eps||
        out[int(t)] = {
            "h": float(ee.delta_h.flatten(1).norm(dim=1).mean()),
            "eps": float(d_eps.mean()),
            "x": float((a_n.sqrt() * (1 - a_t).sqrt() / a_t.sqrt()).item() * d_eps.mean()),
            "x_shift": float((1 - a_t).sqrt().item() * d_eps.mean()),
        }
    return out
