"""The ``hparams_search=edit_quality`` objective: a sweep trial is judged by its edits, not by its training loss.

After a trial has trained its h-function through the normal train path, ``edit_quality`` edits a held-out
*selection* split through the normal edit path (``asyrp.tasks.edit.edit``, with the inversion cache, so no trial after
the first inverts an image twice) and measures, through ``asyrp.metrics.EditScorer``:

- on any dataset: ``edit/clip_direction`` (directional CLIP score between source and edit), ``edit/psnr_rec``
  (PSNR of the edit to the unedited reconstruction, dB) and, when LPIPS weights are given, ``edit/lpips_rec``;
- with an attribute oracle (``attribute.oracle_target``, synthfaces): ``edit/success`` and ``edit/preserved``.

Scalarisation (``edit/objective``, maximised by default):
- oracle: ``min(success - target.success, preserved - target.preserved)``, the margin of the worse target (> 0 means
  both met); a recipe is as good as its weaker side;
- otherwise: ``clip_direction - w_lpips * lpips_rec`` with LPIPS, else
  ``clip_direction - w_psnr * max(0, psnr_floor - psnr_rec)`` (an edit that drifts from the reconstruction pays).
For a Pareto front instead: ``optimized_metric=[edit/success,edit/preserved]
hydra.sweeper.direction=[maximize,maximize]``.

Every trial appends one row (settings, metrics, seconds) to ``edit_quality.csv`` in the sweep folder, logs the same
to W&B when a W&B logger is configured, and the best trial so far is printed as a ready command line.
The selection split must be disjoint from the images a recipe is reported on (synthfaces: ``select/``, seed 3).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from ..ops.errors import AsyrpUserError
from ..plan import FIELDS

if TYPE_CHECKING:
    from ..metrics import EditScorer

log = logging.getLogger(__name__)

TABLE = "edit_quality.csv"
_SKIP_IN_COMMAND = ("hparams_search=", "hydra.", "edit_quality.", "n_trials=", "trials=", "trials.")


def edit_config(cfg: DictConfig, checkpoint: Path, out_dir: Path) -> DictConfig:
    """The edit task's config for the selection split, from the trial's train config (conf/edit.yaml's keys)."""
    eq = cfg.edit_quality
    return OmegaConf.create(
        {
            "task_name": "edit",
            "checkpoint": str(checkpoint),
            "coeffs": None,
            "input_dir": str(eq.input_dir),
            "n_random": None,
            "output_dir": str(out_dir),
            "overwrite": True,
            "n_images": eq.get("n_images"),
            "batch_size": int(eq.get("batch_size", 32)),
            "device": "cpu",
            "seed": 0,
            "progress": False,
            "grid_rows": int(eq.get("grid_rows", 8)),
            "strength": float(eq.strength),
            "sweep": strengths(eq),
            "strip": None,
            "strip_from": None,
            "cache_dir": str(cfg.dataset.cache_dir),
            "arch": OmegaConf.to_container(cfg.arch, resolve=True),
            # the plan as stored in the trial's h-function file; the trial's interval for a file that stores none
            "plan": {
                **{k: None for k in FIELDS},
                "interval": {"t_edit": cfg.plan.t_edit, "t_boost": cfg.plan.get("t_boost")},
            },
            "perf": OmegaConf.to_container(cfg.perf, resolve=True) if cfg.get("perf") is not None else None,
        }
    )


def strengths(eq: Mapping[str, Any]) -> list[float] | None:
    """``edit_quality.strengths``: the edit strengths every trial is measured at (one training, one inversion, several
    cheap edits; the trial keeps the best), or None for the single ``edit_quality.strength``."""
    s = eq.get("strengths")
    return [float(v) for v in s] if s else None


def edit_scorer(cfg: DictConfig, clip, oracle: Any = None) -> tuple[EditScorer, list[str]]:
    """The scorer of a sweep trial and the metrics it reports: CLIP direction (source -> edit), PSNR / LPIPS (when
    ``edit_quality.lpips`` gives weights) of the edit to the unedited reconstruction, and the oracle's success /
    preserved when the attribute has an ``oracle_target`` (``oracle``: passed in by the entry point)."""
    from ..metrics import EditScorer

    eq = cfg.edit_quality
    target = cfg.attribute.get("oracle_target") if eq.get("judge", "auto") in ("auto", "oracle") else None
    lp = OmegaConf.to_container(eq.lpips, resolve=True) if eq.get("lpips") else None
    if target and oracle is None:
        raise AsyrpUserError(
            f"oracle target {target}: no attribute oracle was passed; build the synthfaces "
            "one (python -m asyrp.synthfaces.build oracle) or set edit_quality.judge=clip"
        )
    scorer = EditScorer(
        clip=clip,
        source=list(cfg.attribute.source),
        target=list(cfg.attribute.target),
        oracle=oracle,
        oracle_target=target,
        lpips=lp,
    )
    return scorer, ["n", "clip_direction", "psnr_rec", *(["lpips_rec"] if lp else []), *(["oracle"] if target else [])]


def measure(cfg: DictConfig, clip, backbone, res: Mapping[str, Any], oracle: Any = None) -> list[dict[str, float]]:
    """The edit metrics and objective of one edit run (``res``: what ``asyrp.tasks.edit.edit`` returned), one dict per
    edit strength of the run (``edit/strength``)."""
    import json

    from .. import build
    from ..data.cache import cached_inversions
    from ..data.images import read_image_files

    eq, out = cfg.edit_quality, Path(res["output_dir"])
    man = json.loads(Path(res["manifest"]).read_text())
    items = man["inputs"]
    size = int(man["image_size"] or 32)
    x_src = read_image_files([it["source"] for it in items], size)
    # the unedited reconstruction: stored in the inversion cache by the edit run (nothing is computed here)
    entries = cached_inversions(
        str(cfg.dataset.cache_dir),
        backbone,
        build.alpha_bar(cfg.arch),
        [Path(it["source"]) for it in items],
        res["plan"],
        image_size=size,
    )
    x_rec = torch.stack([e["x_rec"] for e in entries]).float()
    scorer, metrics = edit_scorer(cfg, clip, oracle)
    rows = []
    for k, strength in enumerate(strengths(eq) or [float(eq.strength)]):
        x_edit = read_image_files([out / it["outputs"][k] for it in items], size)
        m = scorer.score(x_src, x_edit, metrics, x_rec=x_rec, prefix="edit/")
        m["edit/objective"] = objective(m, eq)
        rows.append({"edit/strength": strength, **m})
    return rows


def objective(m: Mapping[str, float], eq: Mapping[str, Any]) -> float:
    """The documented scalarisation (module docstring)."""
    if "edit/success" in m:
        tgt = eq.get("target", {})
        return min(
            m["edit/success"] - float(tgt.get("success", 0.8)), m["edit/preserved"] - float(tgt.get("preserved", 0.9))
        )
    fid = eq.get("fidelity", {})
    if "edit/lpips_rec" in m:
        return m["edit/clip_direction"] - float(fid.get("w_lpips", 1.0)) * m["edit/lpips_rec"]
    short = max(0.0, float(fid.get("psnr_floor", 25.0)) - m["edit/psnr_rec"])
    return m["edit/clip_direction"] - float(fid.get("w_psnr", 0.02)) * short


def _overrides() -> list[str]:
    try:
        from hydra.core.hydra_config import HydraConfig

        return list(HydraConfig.get().overrides.task)
    except ValueError:  # not inside a Hydra app (called from Python)
        return []


def table_path(cfg: DictConfig) -> Path:
    if cfg.edit_quality.get("table"):
        return Path(str(cfg.edit_quality.table))
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode == RunMode.MULTIRUN:
            return Path(hc.sweep.dir) / TABLE
    except ValueError:
        pass
    return Path(str(cfg.paths.output_dir)) / TABLE


def append_rows(path: Path, new: list[Mapping[str, Any]]) -> None:
    """A trial's rows, all at once and in turns with the trials running beside it (the table's lock); rows of
    the same run folder (a killed attempt of this trial) are replaced. A column that appears later (e.g. lpips)
    widens the table (the file is rewritten)."""
    from ..ops.locks import acquire

    path.parent.mkdir(parents=True, exist_ok=True)
    with acquire(path.with_name(path.name + ".lock"), wait=True):
        folders = {str(r.get("run_dir")) for r in new if r.get("run_dir")}
        rows = [r for r in read_table(path) if r.get("run_dir") not in folders]
        cols = list(rows[0].keys()) if rows else []
        for row in new:
            cols += [k for k in row if k not in cols]
        rows += [dict(r) for r in new]
        tmp = path.with_suffix(".csv.tmp")
        with open(tmp, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=cols)
            w.writeheader()
            w.writerows({k: r.get(k, "") for k in cols} for r in rows)
        tmp.replace(path)


def read_table(path: Path) -> list[dict[str, str]]:
    if not Path(path).is_file():
        return []
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def best_command(path: Path, metric: str = "edit/objective") -> str | None:
    """The best trial of the table as a ready command: the train overrides with its edit strength, which the file
    then records (model.edit_strength: edit.py's default)."""
    rows = [r for r in read_table(path) if r.get(metric) not in (None, "", "nan")]
    if not rows:
        return None
    best = max(rows, key=lambda r: float(r[metric]))
    over = [o for o in best["overrides"].split(" ") if o and not o.startswith(_SKIP_IN_COMMAND)]
    return (
        f"best trial {best['trial']} ({metric}={float(best[metric]):.3f}): python train.py {' '.join(over)} "
        f"model.edit_strength={best['strength']}  # then python edit.py checkpoint=<run>/checkpoints/hfunction.pt"
    )


def edit_quality(cfg: DictConfig, objects: Mapping[str, Any], oracle: Any = None) -> dict[str, float]:
    """Edit the selection split with the trial's h-function, measure (``oracle``: the attribute oracle train.py
    passes in), record the trial, print the best so far."""
    eq = cfg.edit_quality
    if not eq.get("input_dir") or not Path(str(eq.input_dir)).exists():
        raise AsyrpUserError(
            f"edit_quality.input_dir={eq.get('input_dir')} does not exist: write a selection split "
            "(python -m asyrp.synthfaces.data --n-select 64) or pass edit_quality.input_dir=<folder>"
        )
    from .edit import edit

    t_start = time.time()
    run_dir = Path(str(cfg.paths.output_dir))
    ckpt = run_dir / "checkpoints" / "hfunction.pt"
    res = edit(edit_config(cfg, ckpt, run_dir / "select_edits"))
    measured = measure(cfg, objects["clip"], objects["backbone"].cpu(), res, oracle)
    best = max(measured, key=lambda r: r["edit/objective"])
    seconds = round(time.time() - t_start, 1)
    overrides = _overrides()
    path = table_path(cfg)
    rows = [_row(cfg, objects, r, r is best, overrides, seconds) for r in measured]
    append_rows(path, rows)  # one row per edit strength; the trial's value is its best strength's
    _log_wandb(objects.get("loggers") or [], next(r for r in rows if r["chosen"]), path)
    m = {k: v for k, v in best.items()}
    m["edit/seconds"] = seconds
    log.info("edit_quality: %s", " ".join(f"{k}={v}" for k, v in m.items()))
    line = best_command(
        path,
        str(cfg.get("optimized_metric") or "edit/objective")
        if isinstance(cfg.get("optimized_metric"), str)
        else "edit/objective",
    )
    if line:
        print(line, flush=True)
    return m


def _row(cfg: DictConfig, objects: Mapping[str, Any], r: Mapping[str, float], chosen: bool, overrides, seconds):
    """One row of the table: the trial (Optuna's number), its settings, one edit strength's metrics."""
    m = {k: v for k, v in r.items() if k != "edit/strength"}
    return {
        "trial": _trial_number(),
        "overrides": " ".join(overrides),
        "t0": cfg.plan.t0,
        "t_edit": cfg.plan.t_edit,
        "t_boost": cfg.plan.get("t_boost"),
        "lr": cfg.model.optimizer.lr,
        "w_recon": cfg.model.loss.w_recon,
        "n_iter": cfg.model.n_iter,
        "n_images": cfg.dataset.get("n_images"),
        "strength": r["edit/strength"],
        "chosen": chosen,
        "seed": cfg.seed,
        "train_seconds": objects.get("train_seconds", ""),
        "edit/seconds": seconds,
        **{k: (round(v, 4) if isinstance(v, float) and math.isfinite(v) else v) for k, v in m.items()},
        "run_dir": str(Path(str(cfg.paths.output_dir))),
    }


def _trial_number() -> int | str:
    """Optuna's trial number (set by asyrp's sweeper), else Hydra's job number (another sweeper)."""
    import os

    if os.environ.get("ASYRP_TRIAL"):
        return int(os.environ["ASYRP_TRIAL"])
    try:
        from hydra.core.hydra_config import HydraConfig

        return int(HydraConfig.get().job.num)
    except (ValueError, TypeError, AttributeError):
        return ""


def _log_wandb(loggers: list, row: Mapping[str, Any], path: Path) -> None:
    """The trial's settings, objective and its parts in its W&B run (logged and in the summary; the run is in the
    study's group, conf/logger/wandb.yaml), and the sweep's table so far."""
    from pytorch_lightning.loggers import WandbLogger

    for lg in loggers:
        if isinstance(lg, WandbLogger):
            import wandb

            exp = lg.experiment
            exp.summary.update({k: v for k, v in row.items() if k not in ("overrides", "run_dir")})
            exp.log({k: v for k, v in row.items() if k.startswith("edit/") and isinstance(v, int | float)})
            rows = read_table(path)
            exp.log({"edit_quality/trials": wandb.Table(columns=list(rows[0]), data=[list(r.values()) for r in rows])})


def t_edit_below_t0(cfg: DictConfig, trial) -> None:
    """Optuna ``custom_search_space``: t_edit is drawn below the trial's t0 (the edit interval is [t0, t_edit]),
    between ``edit_quality.t_edit_min`` and t0 - ``edit_quality.t_edit_gap``, in steps of 50."""
    eq = cfg.get("edit_quality") or {}
    t0 = int(trial.params.get("plan.t0", trial.user_attrs.get("plan.t0", cfg.plan.t0)))
    if "plan.t_edit" in trial.user_attrs:  # fixed on the command line
        return
    gap, lo = int(eq.get("t_edit_gap", 50)), int(eq.get("t_edit_min", 100))
    hi = max(t0 - gap, 0)
    lo = min(lo, hi)
    trial.suggest_int("plan.t_edit", lo, hi, step=50 if (hi - lo) % 50 == 0 else 1)


class BestTrialCallback(Callback):
    """Hydra callback: at the end of a sweep, print the best trial of the table as a ready command."""

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        path = Path(str(config.hydra.sweep.dir)) / TABLE
        line = best_command(path)
        if line:
            n = len({r.get("trial") for r in read_table(path)})
            print(f"edit_quality sweep done ({n} trials, table {path})\n{line}", flush=True)
