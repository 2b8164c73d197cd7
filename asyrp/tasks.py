"""The two jobs, as functions of a composed config (train.py / edit.py are thin @hydra.main wrappers).

``train(cfg) -> (metric_dict, object_dict)``: train an h-function for one attribute; a sweep optimises
``metric_dict[cfg.optimized_metric]``.
``edit(cfg) -> dict``: edit a folder of images with a trained (or official) h-function and write PNGs.

This module only orders the work; the rooms it calls: config checks (asyrp.checks: every problem the user can fix,
before any network pass or output file, as ONE ``AsyrpUserError``), run folders (asyrp.ops.claims), the h-function file
format (asyrp.hfunctions.files), the timestep plan and the walk (asyrp.samplers), images (asyrp.data.images).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from .checks import (
    EditSettings,
    check_edit_config,
    check_hfunction_mode,
    check_perf,
    check_resume_checkpoint,
    check_train_config,
    edit_settings,
)
from .hfunctions.files import hfunction_from_payload, read_hfunction_file
from .ops import faults
from .ops.claims import MANIFEST, claim_edit_dir, claim_train_dir, holds_claims
from .ops.errors import AsyrpUserError
from .ops.guard import UNGUARDED, Guard

if TYPE_CHECKING:
    from .perf import PerfConfig

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    from .config import plain

    return plain(cfg)


# -- building blocks -------------------------------------------------------------------------------------------
def build_backbone(arch: Mapping[str, Any], device: str | torch.device = "cpu"):
    from .backbones import load_backbone

    ckpt = arch.get("checkpoint")
    try:
        return load_backbone(arch["family"], arch.get("config"), ckpt, device=device)
    except (FileNotFoundError, ValueError, KeyError, TypeError) as err:
        where = f" from {ckpt}" if ckpt and str(ckpt) not in str(err) else ""
        raise AsyrpUserError(f"could not load backbone {arch.get('name')!r}{where}: {err}") from err


def alphas(arch: Mapping[str, Any]) -> torch.Tensor:
    from .schedules import alphas_cumprod, make_betas

    return alphas_cumprod(make_betas(arch.get("beta_schedule", "linear")))


def instantiate_list(group: Any) -> list:
    """Instantiate every entry of a callbacks/logger group that has a _target_ (None entries are switched off)."""
    from hydra.utils import instantiate

    if not group:
        return []
    return [instantiate(c) for c in group.values() if c is not None and "_target_" in c]


def get_metric_value(metric_dict: Mapping[str, Any], name: str | None, required: bool = True) -> float | None:
    """The value a sweep optimises. Missing: an error in a sweep (required), else None with a warning."""
    if not name:
        return None
    if name not in metric_dict:
        msg = (f"optimized_metric={name!r} was not logged (logged: {sorted(metric_dict)}); enable validation "
               "(trainer.limit_val_batches > 0, dataset.n_val > 0) or choose a logged metric")
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

    from .ops import secrets

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
    if accounted is not None and rank0:  # the run records which files of dataset.path it used and which it skipped
        from .ops.io import atomic_write_json

        atomic_write_json({"source": str(cfg.dataset.path), "used": [str(f) for f in accounted[0]],
                           "skipped": [{"path": str(f), "reason": r} for f, r in accounted[1]]},
                          Path(str(cfg.paths.output_dir)) / "inputs.json")
    pl.seed_everything(int(cfg.seed), workers=True)

    perf = check_perf(cfg.get("perf"))
    parts = _training_parts(cfg, perf)
    trainer, callbacks, loggers = _trainer(cfg)
    if cfg.get("train", True):
        with faults.doing("training", "dataset.batch_size", int(cfg.dataset.get("batch_size", 1))):
            trainer.fit(parts["module"], datamodule=parts["datamodule"], ckpt_path=str(ckpt_path) if ckpt_path else None)
    metric_dict = {k: float(v) for k, v in trainer.callback_metrics.items()}
    objects = {"cfg": cfg, **parts, "trainer": trainer, "callbacks": callbacks, "loggers": loggers}
    return metric_dict, objects


def _sweep_info() -> tuple[str, str] | None:
    """(sweep dir, trial number) inside a Hydra multirun, else None."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        return (str(hc.sweep.dir), str(hc.job.num)) if hc.mode == RunMode.MULTIRUN else None
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
        storage = OmegaConf.select(cfg, "hydra.sweeper.storage", default=None)
        hint = (f"rerun the same command with hydra.sweep.dir={sweep[0]} (trial {sweep[1]} stopped): "
                + ("the study in its storage continues" if storage else "the study was in memory and starts anew")
                + "; a trial with the same settings as before (a seeded sampler repeats them) resumes from its folder")
    else:
        hint = f"rerun the same command with hydra.run.dir={out}: it resumes from {out / 'checkpoints' / 'last.ckpt'}"
    faults.set_resume(hint + " (the inversion cache keeps every finished entry)")


def _training_parts(cfg: DictConfig, perf: PerfConfig) -> dict[str, Any]:
    """Backbone, schedule, CLIP, h-function, the DataModule (its inversion cache built here) and the module, all on
    one plan (the plan group: n_inv, n_gen, t0, t_edit, t_boost, spacing, mode)."""
    from hydra.utils import instantiate

    from .clip import load_clip
    from .data import AsyrpDataModule
    from .hfunctions.build import build_hfunction
    from .module import AsyrpModule
    from .ops import secrets
    from .perf import loader_kwargs, with_perf
    from .plan import plan_of

    # speed options (asyrp.perf; auto = on for CUDA), resolved on the device of each input: on the CPU while the
    # inversion cache is built here, on the training device once Lightning has moved the module
    backbone = with_perf(build_backbone(cfg.arch), perf)
    a = alphas(cfg.arch)
    clip = load_clip(cfg.clip)
    hf_cfg = _plain(cfg.hfunction)
    try:
        hfunc = build_hfunction(hf_cfg, backbone)
    except (ValueError, FileNotFoundError) as err:
        raise AsyrpUserError(f"could not build the h-function from hfunction config: {err}") from err

    m = cfg.model
    plan = plan_of(cfg.plan)
    # perf.pin_memory (auto: for a CUDA trainer) and perf.num_workers (null: keep dataset.num_workers)
    dm_kw = {**_plain(cfg.dataset), **loader_kwargs(perf, _device(cfg))}
    datamodule = AsyrpDataModule(**dm_kw).bind(backbone, a, plan, faults.GUARD)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        # build the cache here, in the launching process: bad images fail with our error before fit starts;
        # prepare_data inside fit then finds every entry and computes nothing
        with faults.doing("building the inversion cache", "dataset.batch_size", int(cfg.dataset.get("batch_size", 1))):
            datamodule.prepare_data()

    # everything saved (hparams.yaml, last.ckpt, hfunction.pt) goes through redact: no credentials in outputs
    module = AsyrpModule(
        hfunc, backbone, clip, a,
        source=list(cfg.attribute.source), target=list(cfg.attribute.target),
        optimizer=instantiate(m.optimizer), scheduler=instantiate(m.scheduler) if m.get("scheduler") else None,
        plan=plan, strength=m.strength, loss=_plain(m.loss), seed=cfg.seed,
        config=secrets.redact({"hfunction": hf_cfg, "arch": {k: _plain(cfg.arch.get(k)) for k in ("name", "family", "beta_schedule")},
                               "attribute": _plain(cfg.attribute),
                               "model": {k: v for k, v in _plain(m).items() if k not in ("optimizer", "scheduler")},
                               "plan": _plain(cfg.plan),
                               "run": secrets.redact(_plain(cfg))}),
    )
    return {"module": module, "datamodule": datamodule, "backbone": backbone, "clip": clip}


def _trainer(cfg: DictConfig) -> tuple[Any, list, list]:
    """The Lightning Trainer with the configured callbacks and loggers, plus the ones every run needs."""
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from .callbacks import FiniteGuard, ProgressLog, StopOnSignal
    from .ops import secrets
    from .ops.lightning import AtomicCheckpointIO

    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    if not loggers:  # nothing to report a learning rate to (logger=null / ~logger)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    if not any(isinstance(c, FiniteGuard) for c in callbacks):
        callbacks.append(FiniteGuard())  # NaN/inf stops the run before a bad checkpoint is written
    callbacks.append(StopOnSignal(faults.GUARD))  # Ctrl-C / SIGTERM: last.ckpt at the end of the batch, one line, 130 / 143
    if cfg.trainer.get("enable_progress_bar", True) and not any(isinstance(c, pl.callbacks.ProgressBar) for c in callbacks):
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


# -- edit ------------------------------------------------------------------------------------------------------

def _unique_ids(files: list[Path]) -> list[str]:
    ids, seen = [], set()
    for f in files:
        base = f.stem
        cand, i = base, 1
        if cand in seen:
            cand = f"{base}_{f.suffix.lstrip('.').lower()}"
        while cand in seen:
            i += 1
            cand = f"{base}_{i}"
        seen.add(cand)
        ids.append(cand)
    return ids


@holds_claims  # output_dir is this run's until edit returns
def edit(cfg: DictConfig) -> dict[str, Any]:
    """Edit images (a folder or glob, or N random samples) with one or more h-functions; see conf/edit.yaml.

    Order: the config is checked, the images are scanned (unusable ones skipped and reported), the h-function files
    are read and the output folder claimed before any network is loaded. Outputs (per-image PNGs, grid.png,
    manifest.json) are written atomically, image by image: a rerun with the same settings completes only the
    missing images; another run's outputs in ``output_dir`` are never overwritten unless ``overwrite=true``.
    """
    from .ops import secrets
    from .ops.io import atomic_write_json

    ckpts = check_edit_config(cfg)
    secrets.install_log_filter()
    job = _EditJob(cfg, ckpts, faults.GUARD)
    out = Path(str(cfg.output_dir)).expanduser()
    faults.check_writable(out, "output_dir")  # a read-only or foreign folder fails here, before any network
    faults.set_resume(f"rerun the same command with output_dir={out}: it edits only the images not done yet")
    # claim the output folder: same settings -> resume, another run's outputs -> refuse unless overwrite=true
    same_run = claim_edit_dir(out, job.fingerprint, bool(cfg.get("overwrite", False)))
    if same_run:
        job.done = {it["id"] for it in job.inputs if all((out / n).is_file() for n in job.out_names(it["id"]))}
    todo = [it for it in job.inputs if it["id"] not in job.done]
    if job.done:
        log.info("%s: %d of %d images already done with these settings, editing the other %d", out, len(job.done),
                 len(job.inputs), len(todo))

    job.load_networks()
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(job.manifest(False), out / MANIFEST)
    written = job.run(todo, out)
    job.write_grid(out)
    atomic_write_json(job.manifest(True), out / MANIFEST)
    skipped = job.skipped
    log.info("edited %d images (%d already done, %d files skipped, reasons in manifest.json) -> %s", len(todo),
             len(job.inputs) - len(todo), len(skipped), out)
    return {"written": written, "output_dir": out, "manifest": out / MANIFEST, "t_edit": job.plan.t_edit,
            "t_boost": job.plan.t_boost, "n_gen": job.plan.n_gen, "n_inv": job.plan.n_inv,
            "plan": job.plan, "done_before": len(job.inputs) - len(todo), "edited": len(todo),
            "skipped": [(str(p), r) for p, r in skipped], "coefficients": job.settings.rows}


class _EditJob:
    """One edit run's inputs, settings and networks. Built from the config and the h-function files (each read
    once) before any network is loaded; the settings end in one (K, n) coefficient matrix and one timestep plan.
    ``guard`` (asyrp/ops/guard.py): where the edit loop and its cache build stop, and what they are doing."""

    def __init__(self, cfg: DictConfig, ckpts: list[Path], guard: Guard = UNGUARDED):
        from .ops.io import file_digest

        self.cfg, self.ckpts, self.guard = cfg, ckpts, guard
        arch_cfg = cfg.arch.get("config") or {}
        self.size = int(arch_cfg.get("image_size") or arch_cfg.get("sample_size") or 0)
        self.seed = int(cfg.get("seed", 0))
        self.random_inputs = cfg.get("input_dir") is None
        self.inputs, self.skipped = self._inputs()
        self.done: set[str] = set()
        # the h-function files (read safely, once; built when the backbone is there) and the settings they carry
        self.payloads = [read_hfunction_file(c) for c in ckpts]
        self.metas = [p if isinstance(p, Mapping) and p.get("format") else {} for p in self.payloads]
        self.plan = self._schedule()
        self.settings: EditSettings = edit_settings(cfg, len(ckpts), [(m.get("edit") or {}).get("strength")
                                                                       for m in self.metas])
        self.record = {
            "arch": cfg.arch.get("name"), "arch_checkpoint": cfg.arch.get("checkpoint"),
            "checkpoints": [{"path": str(c), "digest": file_digest(c), "kind": "asyrp-hfunction" if m else "official",
                             "attribute": (m.get("attribute") or {}).get("name") if m else None}
                            for c, m in zip(ckpts, self.metas)],
            "coefficients": self.settings.rows, "labels": self.settings.labels, "n_inv": self.plan.n_inv,
            "n_gen": self.plan.n_gen, "t0": self.plan.t0, "t_edit": self.plan.t_edit, "t_boost": self.plan.t_boost,
            "mode": self.plan.mode, "seed": self.seed, "input": "random" if self.random_inputs else "images",
            "image_size": self.size,
        }
        if self.plan.spacing != "official":  # recorded only when set, so earlier runs' fingerprints still match
            self.record["spacing"] = self.plan.spacing
        if self.windows:
            self.record["intervals"] = [{k: w[k] for k in ("t0", "t_edit", "step_scale")} for w in self.windows]
        text = json.dumps(self.record, sort_keys=True, default=str).encode()
        self.fingerprint = hashlib.blake2b(text, digest_size=12).hexdigest()

    def _inputs(self) -> tuple[list[dict[str, Any]], list[tuple[Path, str]]]:
        """Image files (unusable ones skipped with a reason), or seeded random samples; image i gets seed + i."""
        from .data.images import scan_images

        cfg, seed = self.cfg, self.seed
        if self.random_inputs:
            return [{"id": f"sample_{k:05d}", "source": "random", "seed": seed + k} for k in range(int(cfg.n_random))], []
        files, skipped = scan_images(cfg.input_dir, cfg.get("n_images"), self.size or 32, what="input_dir")
        ids = _unique_ids(files)
        return [{"id": i, "source": str(f), "seed": seed + k} for k, (i, f) in enumerate(zip(ids, files))], skipped

    def _schedule(self):
        """The plan (asyrp.plan.resolve_plan): the config's plan.*, else the values stored in the first file, else
        plan.interval's; a composition of files trained on different intervals keeps each function in its own."""
        from .plan import FIELDS, resolve_plan

        p = self.cfg.plan
        plan, self.windows = resolve_plan({k: p.get(k) for k in FIELDS}, [dict(m.get("edit") or {}) for m in self.metas],
                                          p.get("interval"))
        check_hfunction_mode(plan.mode, "plan.mode", [m.get("hfunction") for m in self.metas])
        for w, c in zip(self.windows or [], self.ckpts):
            w["path"] = str(c)
        if self.windows:
            log.info("composition: each h-function in its own interval, %s; one walk from t0=%d (%d steps)",
                     ", ".join(f"{Path(w['path']).name} [{w['t0']}, {w['t_edit']}]" for w in self.windows), plan.t0,
                     plan.n_gen)
        return plan

    def out_names(self, item_id: str) -> list[str]:
        k = len(self.settings.labels)
        names = [f"{item_id}.png"] if k == 1 else [f"{item_id}_{i:02d}.png" for i in range(k)]
        return ([f"{item_id}_input.png"] if self.random_inputs else []) + names

    def manifest(self, complete: bool) -> dict[str, Any]:
        from .ops import secrets

        return secrets.redact({
            "format": "asyrp-edit/1", "fingerprint": self.fingerprint, "complete": complete, **self.record,
            "outputs_per_image": ["input (unedited sample)"] * self.random_inputs + self.settings.labels,
            "inputs": [dict(it, outputs=self.out_names(it["id"]), done=it["id"] in self.done) for it in self.inputs],
            "skipped": [{"path": str(p), "reason": r} for p, r in self.skipped],
        })

    def load_networks(self) -> None:
        from .hfunctions.modules import Composition
        from .plan import in_own_intervals
        from .perf import with_perf

        cfg = self.cfg
        torch.manual_seed(self.seed)  # random test backbones (checkpoint: null) come out the same every run
        self.perf = check_perf(cfg.get("perf"))
        # speed options: auto = on when the backbone is on CUDA (off on CPU)
        self.backbone = with_perf(build_backbone(cfg.arch, device=cfg.get("device") or "cpu"), self.perf)
        self.size = int(self.backbone.image_size)
        self.dev = next(self.backbone.parameters()).device
        fns = [hfunction_from_payload(p, c, self.backbone, cfg.arch.get("name"))[0]
               for p, c in zip(self.payloads, self.ckpts)]
        c = self.settings.coefficients
        if self.windows:  # each function in its own interval, at its trained effect per unit of t
            fns = in_own_intervals(fns, self.windows)
            c = c * torch.tensor([w["step_scale"] for w in self.windows], dtype=c.dtype)
        self.hfunc = fns[0] if len(fns) == 1 else Composition(fns).to(self.dev)
        self.a = alphas(cfg.arch)
        # (K, n): K outputs per image from one inversion; random inputs also give the unedited sample (row 0)
        self.coeffs = torch.cat([c.new_zeros(1, c.shape[1]), c]) if self.random_inputs else c

    def _x_T_cache(self, todo: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """cache_dir set: each image is inverted once across runs (sweep trials) through the inversion cache."""
        if not self.cfg.get("cache_dir") or self.random_inputs or not todo:
            return {}
        from .data.cache import cached_inversions

        entries = cached_inversions(str(self.cfg.cache_dir), self.backbone, self.a, [Path(it["source"]) for it in todo],
                                    self.plan, image_size=self.size, batch_size=int(self.cfg.get("batch_size", 4)),
                                    guard=self.guard)
        return {it["id"]: e["x_T"] for it, e in zip(todo, entries)}

    def _batch_start(self, batch: list[dict[str, Any]], x_T_cached: dict[str, torch.Tensor]):
        """(x0, x_T) of a batch: the images (notes on what reading did go to the manifest), or seeded noise."""
        from .data.images import read_image

        if self.random_inputs:
            shape = (int(getattr(self.backbone, "in_channels", 3)), self.size, self.size)
            return None, torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(10_000_019 + it["seed"]))
                                      for it in batch]).to(self.dev)
        loaded = [read_image(it["source"], self.size) for it in batch]
        for it, (_, notes) in zip(batch, loaded):
            if notes:
                it["notes"] = notes
        x_T = torch.stack([x_T_cached[it["id"]] for it in batch]).to(self.dev) if x_T_cached else None
        return torch.stack([x for x, _ in loaded]).to(self.dev), x_T

    def _edit_batch(self, batch: list[dict[str, Any]], x_T_cached: dict[str, torch.Tensor]) -> torch.Tensor:
        """The edited images of a batch, (K, B, C, H, W)."""
        from .perf import inference_context
        from .samplers import edit as asyrp_edit

        x0, x_T = self._batch_start(batch, x_T_cached)
        with inference_context(self.perf, self.dev):  # inference_mode (auto: on CUDA) or no_grad
            return asyrp_edit(self.backbone, x0, self.hfunc, a=self.a.to(self.dev), plan=self.plan,
                              strength=self.coeffs, seeds=[it["seed"] for it in batch], x_T=x_T).x_edit

    def run(self, todo: list[dict[str, Any]], out: Path) -> list[Path]:
        """Edit ``todo`` in batches; every finished image is on disk and in the manifest before the next batch.
        Ctrl-C / SIGTERM stop between batches; a device out of memory retries the batch at half size, once."""
        from .ops.io import atomic_write_json, atomic_write_png
        from .ops.progress import Progress

        bs, written, halved, i = int(self.cfg.get("batch_size", 4)), [], False, 0
        x_T_cached = self._x_T_cache(todo)
        bar = Progress(len(todo), "edit", "img", enabled=bool(self.cfg.get("progress", True)))  # or lines in a log
        try:
            while i < len(todo):
                self.guard.stop(f"{len(self.done)} of {len(self.inputs)} images are finished in {out} "
                                "(manifest.json lists them)")
                batch = todo[i:i + bs]
                what = f"editing images {i + 1}-{i + len(batch)} of the {len(todo)} to do" + \
                    (" (retried at half the batch size)" if halved else "")
                try:
                    with self.guard.doing(what, "batch_size", bs):
                        x_edit = self._edit_batch(batch, x_T_cached)
                except torch.OutOfMemoryError:  # what CUDA raises (torch's CPU allocator raises RuntimeError)
                    if halved or bs == 1:
                        raise  # one line: out of memory, which batch_size to lower
                    halved, bs = True, max(1, bs // 2)
                    if self.dev.type == "cuda":
                        torch.cuda.empty_cache()
                    log.warning("out of memory on %s %s: retrying at batch_size=%d (once; pass batch_size=%d to "
                                "start there)", self.dev, what, bs, bs)
                    continue
                for b, it in enumerate(batch):
                    for k, name in enumerate(self.out_names(it["id"])):
                        written.append(atomic_write_png(x_edit[k, b], out / name))
                    self.done.add(it["id"])
                atomic_write_json(self.manifest(False), out / MANIFEST)  # a kill from here on loses no finished image
                bar.update(len(batch))
                i += len(batch)
        finally:
            bar.close()
        return written

    def write_grid(self, out: Path) -> None:
        """grid.png: the first grid_rows inputs as named rows; columns: the input, then every output labelled with
        its attribute(s) and strength (asyrp.grid: cells upscaled to >= 128 px)."""
        from .data.images import read_image
        from .grid import columns_grid, save_grid, strength_label

        n_rows = min(int(self.cfg.get("grid_rows", 16)), len(self.inputs))
        if n_rows <= 0:
            return
        names = [(m.get("attribute") or {}).get("name") or c.stem for c, m in zip(self.ckpts, self.metas)]
        strip = self.cfg.get("strip") is not None  # strip columns: also how far along the strip
        heads = ["sample (unedited)"] if self.random_inputs else ["input"]
        heads += [strength_label(names, r) + (f" (strip {lab})" if strip else "")
                  for r, lab in zip(self.settings.rows, self.settings.labels)]
        cols: list[list[torch.Tensor]] = [[] for _ in heads]
        for it in self.inputs[:n_rows]:
            cells = [] if self.random_inputs else [read_image(it["source"], self.size)[0]]
            cells += [read_image(out / n, self.size)[0] for n in self.out_names(it["id"])]
            for col, x in zip(cols, cells):
                col.append(x)
        p = self.plan
        title = (f"edit.py: {', '.join(c.name for c in self.ckpts)} on {self.cfg.arch.get('name')}; rows: inputs, "
                 f"columns: input and edits (attribute x strength); t_edit={p.t_edit}, t_boost={p.t_boost}, "
                 f"n_gen={p.n_gen}")
        save_grid(out / "grid.png", columns_grid(list(zip(heads, map(torch.stack, cols))),
                                                 [it["id"] for it in self.inputs[:n_rows]], title))
