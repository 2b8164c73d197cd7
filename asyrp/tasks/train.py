"""The train task (train.py, conf/train.yaml): ``train(cfg) -> (metric_dict, object_dict)`` trains an h-function for
one attribute; a sweep optimises ``metric_dict[cfg.optimized_metric]`` (``get_metric_value``).

The task only orders the work; the rooms it calls: config checks (asyrp.checks: every problem the user can fix,
before any network pass or output file, as ONE ``AsyrpUserError``), run folders (asyrp.ops.claims), the h-function
(asyrp.hfunctions), the plan (asyrp.plan), the inversion cache and data (asyrp.data), the module (asyrp.module).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from .. import build
from ..checks import check_perf, check_resume_checkpoint, check_train_config
from ..config import plain as _plain
from ..ops import faults
from ..ops.claims import claim_train_dir, holds_claims
from ..ops.errors import AsyrpUserError

if TYPE_CHECKING:
    from ..perf import PerfConfig

log = logging.getLogger(__name__)


def get_metric_value(metric_dict: Mapping[str, Any], name: str | None, required: bool = True) -> float | None:
    """The value a sweep optimises. Missing: an error in a sweep (required), else None with a warning."""
    if not name:
        return None
    if name not in metric_dict:
        msg = (
            f"optimized_metric={name!r} was not logged (logged: {sorted(metric_dict)}); enable validation "
            "(trainer.limit_val_batches > 0, dataset.n_val > 0) or choose a logged metric"
        )
        if required:
            raise AsyrpUserError(msg)
        log.warning(msg)
        return None
    return float(metric_dict[name])


def _device(cfg: DictConfig) -> str:
    acc = str(cfg.trainer.get("accelerator", "cpu"))
    return "cuda" if acc in ("gpu", "cuda") and torch.cuda.is_available() else "cpu"


# -- train -----------------------------------------------------------------------------------------------------
@holds_claims  # the run folder is this run's until train returns
def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    import pytorch_lightning as pl

    from ..ops import secrets

    accounted = check_train_config(cfg)  # every user-fixable problem, before any network is loaded or file written
    faults.require_logger_packages(cfg.get("logger"))  # logger=wandb without wandb: which extra to install
    _train_folders(cfg)  # unwritable run / cache folders fail here; how to resume, for the fault messages
    secrets.register(secrets.collect_config_secrets(cfg))
    secrets.install_log_filter()
    ckpt_path = cfg.get("ckpt_path")
    rank0 = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    if ckpt_path:
        check_resume_checkpoint(ckpt_path)  # before the run folder is claimed: a bad file costs nothing
    resume_own = claim_train_dir(cfg, write=rank0)
    if resume_own is not None:
        check_resume_checkpoint(resume_own, auto=True)  # e.g. torn by a kill during a copy-based write
    ckpt_path = resume_own or ckpt_path
    twins = _paired_twins(cfg, accounted)  # guide=twins: {used, unused} files of its folder, paired once here
    if accounted is not None and rank0:  # the run records which files of dataset.path it used and which it skipped
        from ..ops.io import atomic_write_json

        atomic_write_json(
            {
                "source": str(cfg.dataset.path),
                "used": [str(f) for f in accounted[0]],
                "skipped": [{"path": str(f), "reason": r} for f, r in accounted[1]],
                **({"twins": {"source": str(cfg.model.loss.guide.twins.dir), **twins}} if twins else {}),
            },
            Path(str(cfg.paths.output_dir)) / "inputs.json",
        )
    pl.seed_everything(int(cfg.seed), workers=True)

    perf = check_perf(cfg.get("perf"))
    parts = _training_parts(cfg, perf, twins["used"] if twins else None)
    trainer, callbacks, loggers = _trainer(cfg)
    if cfg.get("train", True):
        with faults.doing("training", "dataset.batch_size", int(cfg.dataset.get("batch_size", 1))):
            trainer.fit(
                parts["module"], datamodule=parts["datamodule"], ckpt_path=str(ckpt_path) if ckpt_path else None
            )
        if ckpt_path and trainer.limit_val_batches and not any(k.startswith("val/") for k in trainer.callback_metrics):
            # resumed from a checkpoint of finished training (killed after it, e.g. a sweep trial): fit ran no loop,
            # so measure the restored weights for whoever reads the metrics
            trainer.validate(parts["module"], datamodule=parts["datamodule"], verbose=False)
    metric_dict = {k: float(v) for k, v in trainer.callback_metrics.items()}
    objects = {"cfg": cfg, **parts, "trainer": trainer, "callbacks": callbacks, "loggers": loggers}
    return metric_dict, objects


def _paired_twins(cfg: DictConfig, accounted) -> dict[str, list[Path]] | None:
    """guide=twins: ``used``, the twin of every training image in the training order, and ``unused``, the folder's
    files no image pairs with (inputs.json's ``twins``, as paths); None without twins."""
    twins = _plain(cfg.model.loss.get("guide") or {}).get("twins")
    if twins is None or accounted is None:
        return None
    from ..twins import pair_files

    unused: list[Path] = []
    used = pair_files(twins, accounted[0], unused)
    return {"used": used, "unused": unused}


def _sweep_info() -> tuple[str, str, Any] | None:
    """(sweep dir, trial folder, study storage) inside a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        return str(hc.sweep.dir), str(hc.sweep.subdir), OmegaConf.select(hc, "sweeper.storage", default=None)
    except Exception:  # noqa: BLE001 - not under Hydra (tests, notebooks)
        return None


def _train_folders(cfg: DictConfig) -> None:
    """Check that the run and cache folders can be written (before any work) and say how a stopped run resumes."""
    out = Path(str(cfg.paths.output_dir))
    faults.check_writable(out, "hydra.run.dir")
    if cfg.dataset.get("cache_dir"):
        faults.check_writable(cfg.dataset.cache_dir, "dataset.cache_dir")
    sweep = _sweep_info()
    if sweep is not None:
        hint = f"rerun the same command with hydra.sweep.dir={sweep[0]} (trial {sweep[1]} stopped): " + (
            f"the study in {sweep[2]} runs only the trials still to do, this one again in its folder, resuming "
            "from its last.ckpt"
            if sweep[2]
            else "the study was in memory and starts anew"
        )
    else:
        hint = f"rerun the same command with hydra.run.dir={out}: it resumes from {out / 'checkpoints' / 'last.ckpt'}"
    faults.set_resume(hint + " (the inversion cache keeps every finished entry)")


def _training_parts(cfg: DictConfig, perf: PerfConfig, twin_files: list[Path] | None = None) -> dict[str, Any]:
    """Backbone, schedule, CLIP, h-function, the DataModule (its inversion cache built here) and the module, all on
    one plan (the plan group: n_inv, n_gen, t0, t_edit, t_boost, spacing, mode)."""
    from hydra.utils import instantiate

    from ..data import AsyrpDataModule
    from ..module import AsyrpModule
    from ..ops import secrets
    from ..perf import loader_kwargs

    # speed options (asyrp.perf; auto = on for CUDA), resolved on the device of each input: on the CPU while the
    # inversion cache is built here, on the training device once Lightning has moved the module
    backbone = build.backbone(cfg.arch, perf=perf)
    a = build.alpha_bar(cfg.arch)
    clip = build.clip(cfg.clip)
    identity = _identity(cfg, backbone)
    hf_cfg = _plain(cfg.hfunction)
    hfunc = build.hfunction(
        hf_cfg,
        backbone,
        _plain(cfg.get("constraint")),
        arch_name=cfg.arch.get("name"),
        target=cfg.attribute.get("oracle_target"),
    )
    if hasattr(hfunc, "stored_constraints"):  # the file keeps the fixed layer (its buffers are in the state dict)
        hf_cfg["constraints"] = hfunc.stored_constraints()
    attr = build.attribute(cfg.attribute)

    m = cfg.model
    plan, _ = build.plan(cfg)
    # perf.pin_memory (auto: for a CUDA trainer) and perf.num_workers (null: keep dataset.num_workers)
    dm_kw = {**_plain(cfg.dataset), **loader_kwargs(perf, _device(cfg))}
    datamodule = AsyrpDataModule(**dm_kw).bind(backbone, a, plan, faults.GUARD)
    if twin_files is not None:  # guide=twins: each training image's twin, inverted by the same cache (asyrp.twins)
        datamodule.pair(twin_files)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        # build the cache here, in the launching process: bad images fail with our error before fit starts;
        # prepare_data inside fit then finds every entry and computes nothing
        with faults.doing("building the inversion cache", "dataset.batch_size", int(cfg.dataset.get("batch_size", 1))):
            datamodule.prepare_data()

    # everything saved (hparams.yaml, last.ckpt, hfunction.pt) goes through redact: no credentials in outputs
    module = AsyrpModule(
        hfunc,
        backbone,
        clip,
        a,
        source=attr["source"],
        target=attr["target"],
        optimizer=instantiate(m.optimizer),
        scheduler=instantiate(m.scheduler) if m.get("scheduler") else None,
        plan=plan,
        strength=m.strength,
        edit_strength=m.get("edit_strength"),
        loss=_plain(m.loss),
        identity=identity,
        probes=_keep_probes(cfg, backbone, a, plan),
        guide=_guide_classifier(cfg, backbone, a, plan),
        seed=cfg.seed,
        config=secrets.redact(
            {
                "hfunction": hf_cfg,
                "arch": {k: _plain(cfg.arch.get(k)) for k in ("name", "family", "beta_schedule")},
                "attribute": _plain(cfg.attribute),
                "model": {k: v for k, v in _plain(m).items() if k not in ("optimizer", "scheduler")},
                "plan": _plain(cfg.plan),
                "run": secrets.redact(_plain(cfg)),
            }
        ),
    )
    return {"module": module, "datamodule": datamodule, "backbone": backbone, "clip": clip}


def _identity(cfg: DictConfig, backbone: Any) -> Any:
    """The frozen IR-SE50 features of the identity loss (None at model.loss.w_id=0, the default, as upstream); the
    official crop needs 256x256 images, checked here before the inversion cache is built."""
    if not float(cfg.model.loss.get("w_id", 0.0)):
        return None
    from ..metrics.identity import check_face_size

    check_face_size((backbone.image_size, backbone.image_size), "model.loss.w_id")
    return build.identity(cfg.identity)


def _keep_probes(cfg: DictConfig, backbone, a, plan) -> Any:
    """keep=probe: its probes, trained on their labelled split (or read from their file) before the h-function and
    written beside it (checkpoints/keep_probes.pt); None without keep=probe."""
    probe = _plain(cfg.model.loss.get("keep") or {}).get("probe")
    if probe is None:
        return None
    from ..probes import prepare_probes

    return _labelled_model(cfg, "the keep probes", prepare_probes, probe, backbone, a, plan)


def _guide_classifier(cfg: DictConfig, backbone, a, plan) -> Any:
    """guide=classifier: its classifier on P_t, trained on its labelled split (or read from its file) before the
    h-function and written beside it (checkpoints/guide_classifier.pt); None with guide=none."""
    c = _plain(cfg.model.loss.get("guide") or {}).get("classifier")
    if c is None:
        return None
    from ..guide import prepare_guide

    # its labelled split's cache is built in batches of dataset.cache_batch_size (null: 4)
    batch = {"cache_batch_size": int(cfg.dataset.get("cache_batch_size") or 4)}
    return _labelled_model(cfg, "the guide classifier", prepare_guide, c, backbone, a, plan, **batch)


def _labelled_model(cfg: DictConfig, what: str, prepare, settings, backbone, a, plan, **extra) -> Any:
    """A model a loss term fits on its own labelled split before the h-function (keep=probe, guide=classifier):
    ``prepare`` trains it (or reads its file) and rank 0 writes it to checkpoints/."""
    rank0 = int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0
    with faults.doing(f"training {what}", "dataset.batch_size", 1):
        return prepare(
            settings,
            backbone=backbone,
            a=a,
            plan=plan,
            arch_name=cfg.arch.get("name"),
            cache_dir=cfg.dataset.get("cache_dir") or cfg.paths.cache_dir,
            out_dir=Path(str(cfg.paths.output_dir)) / "checkpoints",
            write=rank0,
            guard=faults.GUARD,
            **extra,
        )


def _trainer(cfg: DictConfig) -> tuple[Any, list, list]:
    """The Lightning Trainer with the configured callbacks and loggers, plus the ones every run needs."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from ..callbacks import FiniteGuard, ProgressLog, StopOnSignal
    from ..ops import secrets
    from ..ops.lightning import AtomicCheckpointIO

    callbacks = build.instances(cfg.get("callbacks"))
    loggers = build.instances(cfg.get("logger"))
    if not loggers:  # nothing to report a learning rate to (logger=null / ~logger)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    if not any(isinstance(c, FiniteGuard) for c in callbacks):
        callbacks.append(FiniteGuard())  # NaN/inf stops the run before a bad checkpoint is written
    callbacks.append(
        StopOnSignal(faults.GUARD)
    )  # Ctrl-C / SIGTERM: last.ckpt at the end of the batch, one line, 130 / 143
    if cfg.trainer.get("enable_progress_bar", True) and not any(
        isinstance(c, pl.callbacks.ProgressBar) for c in callbacks
    ):
        callbacks.append(ProgressLog())  # a bar on a terminal, timed lines in a log or pipe
    for lg in loggers:
        if isinstance(lg, pl.loggers.WandbLogger) and lg.save_dir and "WANDB_DIR" not in os.environ:
            # spawned ranks attach to the launcher's run but resolve media paths from WANDB_DIR (default: cwd)
            os.environ["WANDB_DIR"] = str(lg.save_dir)
        if isinstance(lg, pl.loggers.WandbLogger):
            secrets.guard_wandb_init()  # W&B records sys.argv: a key passed as an override must not reach it
    # last.ckpt is written to a temporary file beside it, then renamed (Lightning's writer may copy from /tmp).
    # hparams reach the loggers through Lightning inside fit (on rank 0 of the training processes): creating the
    # W&B run here, in the launcher, would leave spawned ranks attached to a run they cannot write media to
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False, plugins=[AtomicCheckpointIO()])
    return trainer, callbacks, loggers
