"""The two jobs, as functions of a composed config (train.py / edit.py are thin @hydra.main wrappers).

``train(cfg) -> (metric_dict, object_dict)``: train an h-function for one attribute; a sweep optimises
``metric_dict[cfg.optimized_metric]``.
``edit(cfg) -> dict``: edit a folder of images with a trained (or official) h-function and write PNGs.

Every problem the user can fix is checked before any network pass or output file and raised as ONE
``AsyrpUserError`` naming the problem and the fix.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from .runs import MANIFEST, claim_edit_dir, claim_train_dir
from .utils.errors import AsyrpUserError

if TYPE_CHECKING:
    from .perf import PerfConfig

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    from .utils.config import plain

    return plain(cfg)


# -- validation ------------------------------------------------------------------------------------------------
_REQUIRED_HINTS = {
    "checkpoint": "checkpoint=<run>/checkpoints/hfunction.pt (or an official .pth; checkpoint=[a.pt,b.pt] composes)",
}


def check_complete(cfg: DictConfig) -> None:
    """Every ``???`` set and every interpolation resolvable, each failure naming its key (before any work)."""
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from .utils.errors import user_error_from

    missing = []
    for k in cfg:
        if k == "hydra":
            continue
        if OmegaConf.is_missing(cfg, k):
            missing.append(str(k))
        elif OmegaConf.is_config(cfg._get_node(k)) and not cfg._get_node(k)._is_interpolation():
            missing += [f"{k}.{m}" for m in OmegaConf.missing_keys(cfg._get_node(k))]
    if missing:
        k = sorted(missing)[0]
        more = f" (also unset: {', '.join(sorted(missing)[1:])})" if len(missing) > 1 else ""
        raise AsyrpUserError(f"{k} is required but not set (???): pass {_REQUIRED_HINTS.get(k, k + '=<value>')}{more}")
    for k in cfg:
        if k == "hydra":
            continue
        try:
            v = cfg._get_node(k)
            if OmegaConf.is_config(v):
                OmegaConf.to_container(v, resolve=True)
            else:
                cfg[k]
        except (InterpolationResolutionError, MissingMandatoryValue) as err:
            raise (user_error_from(err) or AsyrpUserError(str(err))) from err


def _int(value: Any, key: str, lo: int | None = None, hint: str = "") -> int:
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        v = int(float(value))
    except (TypeError, ValueError):
        raise AsyrpUserError(f"{key}={value!r} must be an integer{hint}") from None
    if lo is not None and v < lo:
        raise AsyrpUserError(f"{key}={value} must be >= {lo}{hint}")
    return v


def _float(value: Any, key: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        v = float(value)
    except (TypeError, ValueError):
        raise AsyrpUserError(f"{key}={value!r} must be a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise AsyrpUserError(f"{key}={value!r} must be a finite number")
    return v


_TRAIN_KEYS = {"n_inv": "model.n_inv", "n_gen": "model.n_gen", "t0": "model.t0", "t_edit": "edit_interval.t_edit",
               "t_boost": "edit_interval.t_boost"}


def check_schedule(n_inv: int, n_gen: int, t0: int, t_edit: int | None, t_boost: int | None,
                   keys: Mapping[str, str] | None = None) -> None:
    """Impossible step settings, caught before anything runs; ``keys`` names the config keys in the messages."""
    K = dict(_TRAIN_KEYS, **(keys or {}))
    t0 = _int(t0, K["t0"])
    if not (0 < t0 <= 999):
        raise AsyrpUserError(f"t0={t0} is outside the schedule: it must be in 1..999 (the 1000-step scale): set {K['t0']}")
    for name, v in (("n_inv", n_inv), ("n_gen", n_gen)):
        if _int(v, K[name]) < 2:
            raise AsyrpUserError(f"n_inv={n_inv} and n_gen={n_gen} must both be >= 2 (a DDIM walk needs two timesteps): "
                                 f"set {K[name]}")
    if t_edit is None:
        raise AsyrpUserError(f"{K['t_edit']} is not set: choose an edit_interval config or pass {K['t_edit']}=<t>")
    t_edit = _int(t_edit, K["t_edit"])
    if not (0 <= t_edit <= t0):
        raise AsyrpUserError(f"t_edit={t_edit} is outside the schedule [0, t0={t0}]: edits happen while t >= t_edit, "
                             f"so set {K['t_edit']} <= {K['t0']}")
    if t_boost is not None:
        t_boost = _int(t_boost, K["t_boost"])
        if not (0 <= t_boost <= t0):
            raise AsyrpUserError(f"t_boost={t_boost} is outside the schedule [0, t0={t0}]: set {K['t_boost']}")
        if t_boost > t_edit:
            raise AsyrpUserError(f"t_boost={t_boost} is above t_edit={t_edit}: quality boosting (t < t_boost) must start "
                                 f"after the editing interval (t >= t_edit) ends; set {K['t_boost']} <= {K['t_edit']}")


def _check_file(path: Any, what: str, fix: str) -> None:
    if path is None:
        return
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise AsyrpUserError(f"{what} not found: {p}. {fix}")


def check_arch(arch: Mapping[str, Any]) -> None:
    from .backbones import FAMILIES

    name = arch.get("name")
    if arch.get("family") not in FAMILIES:
        raise AsyrpUserError(f"arch.family={arch.get('family')!r} (arch {name!r}) is not one of {', '.join(FAMILIES)}: "
                             f"fix conf/arch/{name}.yaml or pass arch.family=<family>")
    if arch.get("beta_schedule", "linear") not in ("linear", "cosine"):
        raise AsyrpUserError(f"arch.beta_schedule={arch.get('beta_schedule')!r} must be linear or cosine")
    _check_file(arch.get("checkpoint"), f"backbone checkpoint of arch {name!r}",
                "Download it (see the comment in conf/arch/<name>.yaml), or set ASYRP_CHECKPOINTS / arch.checkpoint.")


def check_mode(mode: Any, key: str) -> None:
    from .samplers import MODES

    if mode is not None and mode not in MODES:
        raise AsyrpUserError(f"{key}={mode!r} is not one of {', '.join(MODES)}")


def check_perf(perf: Any) -> PerfConfig:
    """The speed options (``perf`` group, see asyrp/perf.py): unknown keys and bad autocast values, named."""
    from .perf import AUTO, PerfConfig, autocast_dtype

    try:
        p = PerfConfig.from_any(perf)
        if p.autocast != AUTO:
            autocast_dtype(p.autocast, torch.device("cpu"))
    except (ValueError, TypeError) as err:
        raise AsyrpUserError(f"perf: {err}") from err
    return p


def check_train_config(cfg: DictConfig) -> None:
    check_complete(cfg)
    m, ei = cfg.model, cfg.edit_interval
    check_schedule(m.n_inv, m.n_gen, m.t0, ei.get("t_edit"), ei.get("t_boost"))
    check_mode(m.get("mode"), "model.mode")
    loss = m.get("loss", {})
    for k in ("w_clip", "w_recon"):
        if _float(loss.get(k, 0.0), f"model.loss.{k}") < 0:
            raise AsyrpUserError(f"model.loss.{k}={loss.get(k)} must be >= 0")
    if loss.get("clip_reference", "x0") not in ("x0", "P_orig"):
        raise AsyrpUserError(f"model.loss.clip_reference={loss.get('clip_reference')!r} must be x0 (official) or P_orig")
    if _float(m.optimizer.get("lr", 1.0), "model.optimizer.lr") <= 0:
        raise AsyrpUserError(f"model.optimizer.lr={m.optimizer.get('lr')} must be > 0")
    _int(m.get("n_iter", 1), "model.n_iter", 1)
    _float(m.get("strength", 1.0), "model.strength")
    if not list(cfg.attribute.get("source") or []) or not list(cfg.attribute.get("target") or []):
        raise AsyrpUserError("attribute.source and attribute.target must each list at least one text")
    check_arch(cfg.arch)
    check_perf(cfg.get("perf"))
    _check_file(cfg.get("ckpt_path"), "ckpt_path (checkpoint to resume from)",
                "Pass the last.ckpt of the run to resume (…/checkpoints/last.ckpt) or ckpt_path=null.")
    _int(cfg.dataset.get("n_images", 1), "dataset.n_images", 1)
    _int(cfg.dataset.get("batch_size", 1), "dataset.batch_size", 1)
    if cfg.dataset.kind == "folder":
        from .data.images import list_images

        list_images(cfg.dataset.path, cfg.dataset.n_images)


def check_resume_checkpoint(path: str | Path, auto: bool = False) -> None:
    """The Lightning checkpoint a run resumes from, read safely (tensors only) before any work: one error naming the
    file and the fix for a truncated/damaged file, pickled code, or a file that is not a training checkpoint.
    ``auto``: the run's own last.ckpt, found by rerunning the same command (not passed as ckpt_path)."""
    from collections.abc import Mapping as _Mapping

    from .backbones.checkpoints import CheckpointError, load_file

    path = Path(str(path)).expanduser()
    fix = (f"delete {path} to start this run again from scratch (or pass ckpt_path=<another last.ckpt>)" if auto
           else "pass ckpt_path=<run>/checkpoints/last.ckpt of an intact run, or ckpt_path=null to start afresh")
    try:
        obj = load_file(path)
    except CheckpointError as err:
        msg = str(err)
        if "refused for safety" in msg:
            refused = msg.split("Refused object:")[-1].strip()
            raise AsyrpUserError(f"cannot resume from {path}: it contains pickled Python objects besides tensors "
                                 f"({refused}); loading it is refused for safety (it could run code): {fix}") from err
        detail = msg.split(" (", 1)[-1].split("):", 1)[0] if " (" in msg else msg
        raise AsyrpUserError(f"cannot resume from {path}: the file is truncated, damaged or not a torch checkpoint "
                             f"({detail}): {fix}") from err
    if not (isinstance(obj, _Mapping) and "state_dict" in obj and "global_step" in obj and "loops" in obj):
        raise AsyrpUserError(f"cannot resume from {path}: it is not a Lightning training checkpoint (last.ckpt); "
                             f"hfunction.pt / .pth files are for edit.py: {fix}")


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
def train(cfg: DictConfig) -> tuple[dict[str, float], dict[str, Any]]:
    import pytorch_lightning as pl
    from hydra.utils import instantiate

    from .callbacks import ApplyPerf, FiniteGuard
    from .clip import load_clip
    from .data import AsyrpDataModule
    from .hfunctions import build_hfunction
    from .module import AsyrpModule
    from .perf import apply_perf, loader_kwargs
    from .utils import secrets

    check_train_config(cfg)  # every user-fixable problem, before any network is loaded or file written
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
    pl.seed_everything(int(cfg.seed), workers=True)

    backbone = build_backbone(cfg.arch)
    # speed options (asyrp.perf; auto = on for CUDA). The backbone is on the CPU here, where the inversion cache is
    # built; ApplyPerf applies them again once Lightning has moved it to the training device (fit start).
    perf = check_perf(cfg.get("perf"))
    apply_perf(backbone, perf)
    a = alphas(cfg.arch)
    clip = load_clip(cfg.clip)
    hf_cfg = _plain(cfg.hfunction)
    try:
        hfunc = build_hfunction(hf_cfg, backbone)
    except (ValueError, FileNotFoundError) as err:
        raise AsyrpUserError(f"could not build the h-function from hfunction config: {err}") from err

    # perf.pin_memory (auto: for a CUDA trainer) and perf.num_workers (null: keep dataset.num_workers)
    dm_kw = {**_plain(cfg.dataset), **loader_kwargs(perf, _device(cfg))}
    datamodule = AsyrpDataModule(**dm_kw).bind(backbone, a, n_inv=cfg.model.n_inv, n_gen=cfg.model.n_gen,
                                               t0=cfg.model.t0)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        # build the cache here, in the launching process: bad images fail with our error before fit starts;
        # prepare_data inside fit then finds every entry and computes nothing
        datamodule.prepare_data()

    m = cfg.model
    # everything saved (hparams.yaml, last.ckpt, hfunction.pt) goes through redact: no credentials in outputs
    run_cfg = secrets.redact(_plain(cfg))
    module = AsyrpModule(
        hfunc, backbone, clip, a,
        source=list(cfg.attribute.source), target=list(cfg.attribute.target),
        optimizer=instantiate(m.optimizer), scheduler=instantiate(m.scheduler) if m.get("scheduler") else None,
        n_inv=m.n_inv, n_gen=m.n_gen, t0=m.t0, t_edit=cfg.edit_interval.t_edit, t_boost=cfg.edit_interval.get("t_boost") or 0,
        mode=m.mode, strength=m.strength, loss=_plain(m.loss), seed=cfg.seed,
        config=secrets.redact({"hfunction": hf_cfg, "arch": {k: _plain(cfg.arch.get(k)) for k in ("name", "family", "beta_schedule")},
                               "attribute": _plain(cfg.attribute),
                               "model": {k: v for k, v in _plain(m).items() if k not in ("optimizer", "scheduler")},
                               "run": run_cfg}),
    )
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    if not loggers:  # nothing to report a learning rate to (logger=null / ~logger)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    if not any(isinstance(c, FiniteGuard) for c in callbacks):
        callbacks.append(FiniteGuard())  # NaN/inf stops the run before a bad checkpoint is written
    callbacks.append(ApplyPerf(perf))
    for lg in loggers:
        if isinstance(lg, pl.loggers.WandbLogger) and lg.save_dir and "WANDB_DIR" not in os.environ:
            # spawned ranks attach to the launcher's run but resolve media paths from WANDB_DIR (default: cwd)
            os.environ["WANDB_DIR"] = str(lg.save_dir)
        if isinstance(lg, pl.loggers.WandbLogger):
            secrets.guard_wandb_init()  # W&B records sys.argv: a key passed as an override must not reach it
    from .utils.checkpoint_io import AtomicCheckpointIO

    # last.ckpt is written to a temporary file beside it, then renamed (Lightning's writer may copy from /tmp)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                      plugins=[AtomicCheckpointIO()])
    # hparams reach the loggers through Lightning inside fit (on rank 0 of the training processes): creating the
    # W&B run here, in the launcher, would leave spawned ranks attached to a run they cannot write media to

    if cfg.get("train", True):
        # spawned processes (ddp_spawn) get the module pickled, and the encode/decode wrappers of the perf options
        # are closures: they come off here; ApplyPerf puts the options back on in every process at fit start
        apply_perf(backbone, dataclasses.replace(perf, autocast=None, channels_last=False, compile=False))
        trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt_path) if ckpt_path else None)
    metric_dict = {k: float(v) for k, v in trainer.callback_metrics.items()}
    objects = {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer,
               "callbacks": callbacks, "loggers": loggers, "backbone": backbone, "clip": clip}
    return metric_dict, objects


# -- edit ------------------------------------------------------------------------------------------------------
def read_hfunction_file(path: str | Path) -> Any:
    """The object stored in an h-function checkpoint, read safely (tensors only), with one clear error per fault."""
    from .backbones.checkpoints import CheckpointError, load_file

    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise AsyrpUserError(f"h-function checkpoint not found: {path}. Pass checkpoint=<run>/checkpoints/hfunction.pt "
                             "or an official *.pth file.")
    try:
        return load_file(path)
    except CheckpointError as err:
        msg = str(err)
        if "refused for safety" in msg:
            refused = msg.split("Refused object:")[-1].strip()
            raise AsyrpUserError(
                f"h-function checkpoint {path} contains pickled Python objects besides tensors ({refused}); loading "
                "it is refused for safety (it could run code). If you trust the file, re-save its tensors only "
                "(torch.save({'0': state_dict}, 'clean.pth')) and pass that file") from err
        raise AsyrpUserError(f"cannot read h-function checkpoint {path}: the file is truncated, damaged or not a torch "
                             f"checkpoint ({msg.split(' (')[-1].split(')')[0] if ' (' in msg else msg}); re-download it, "
                             "or use the hfunction.pt of another epoch") from err


def _probe_hfunction(hfunc: torch.nn.Module, backbone, path: Path, arch_name: str | None, t0: int = 999) -> None:
    """Run the h-function once on a zero bottleneck: a file for another backbone fails here, with its shapes."""
    p = next(backbone.parameters())
    h = torch.zeros(1, *[int(v) for v in backbone.h_shape], device=p.device, dtype=p.dtype)
    emb = torch.zeros(1, int(backbone.emb_dim), device=p.device, dtype=p.dtype)
    what = f"h of shape {list(h.shape[1:])} / emb {emb.shape[1]}"
    try:
        with torch.no_grad():
            out = hfunc(h, emb, torch.full((1,), int(t0), device=p.device))
    except (RuntimeError, ValueError, IndexError, KeyError) as err:
        raise AsyrpUserError(f"h-function checkpoint {path} does not fit the bottleneck of arch {arch_name!r} ({what}): "
                             f"{type(err).__name__}: {err}. Pass the arch it was trained for") from err
    if tuple(out.shape) != tuple(h.shape):
        raise AsyrpUserError(f"h-function checkpoint {path} gives delta_h of shape {list(out.shape[1:])} but arch "
                             f"{arch_name!r} has {what}: pass the arch it was trained for")


def hfunction_from_payload(obj: Any, path: str | Path, backbone, arch_name: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """Our ``hfunction.pt`` payload (rebuilt from its stored config, strict) or an official file's object."""
    from .hfunctions import build_hfunction, load_official_hfunction
    from .utils.io import HFUNCTION_FORMAT

    path = Path(str(path)).expanduser()
    meta: dict[str, Any] = {}
    try:
        if isinstance(obj, Mapping) and obj.get("format") == HFUNCTION_FORMAT:
            arch = (obj.get("arch") or {}).get("name")
            if arch and arch_name and arch != arch_name:  # same shapes, another network: allowed, but say so
                log.warning("%s was trained with arch %r, editing with arch %r", path, arch, arch_name)
            want = (list(obj["h_shape"]), int(obj["emb_dim"]))
            have = (list(backbone.h_shape), int(backbone.emb_dim))
            if want != have:
                raise AsyrpUserError(f"{path} was trained for h of shape {want[0]} / emb {want[1]} (arch {arch!r}) but "
                                     f"the backbone gives {have[0]} / {have[1]}: pass arch={arch}")
            hf_cfg = dict(obj["hfunction"] or {})
            hf_cfg["checkpoint"] = None
            hfunc = build_hfunction(hf_cfg, backbone)
            hfunc.load_state_dict(obj["state_dict"], strict=True)
            meta = dict(obj)
        else:
            hfunc = load_official_hfunction(path)
    except AsyrpUserError:
        raise
    except (ValueError, KeyError, RuntimeError, TypeError) as err:
        raise AsyrpUserError(f"h-function checkpoint {path} does not fit: {err}. Pass an hfunction.pt written by "
                             "train.py or an official Asyrp .pth (not a backbone checkpoint)") from err
    p = next(backbone.parameters())
    hfunc = hfunc.to(device=p.device, dtype=p.dtype).eval()
    _probe_hfunction(hfunc, backbone, path, arch_name, int((meta.get("edit") or {}).get("t0", 999)))
    return hfunc, meta


def load_hfunction_checkpoint(path: str | Path, backbone, arch_name: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """An h-function from our ``hfunction.pt`` (rebuilt from its stored config, strict) or an official ``.pth``."""
    return hfunction_from_payload(read_hfunction_file(path), path, backbone, arch_name)


def _as_list(v: Any) -> list | None:
    if v is None:
        return None
    if OmegaConf.is_config(v):
        v = OmegaConf.to_container(v, resolve=True)
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _settings_rows(cfg: DictConfig, n: int, base: list[float]) -> tuple[list[list[float]], list[str]]:
    """Coefficient rows (K, n) of the outputs per image, and a label for each: one edit, a strength sweep
    (``sweep``), or an interpolation strip of ``strip`` steps from ``strip_from`` to the edit."""
    sweep, strip = _as_list(cfg.get("sweep")), cfg.get("strip")
    if sweep is not None and strip is not None:
        raise AsyrpUserError("sweep and strip are both set: choose one (sweep=[0.5,1,1.5] or strip=5)")
    if sweep is not None:
        if not sweep:
            raise AsyrpUserError("sweep=[] lists no strengths: pass e.g. sweep=[0,0.5,1,1.5] or sweep=null")
        vals = [_float(v, "sweep") for v in sweep]
        return [[v * b for b in base] for v in vals], [f"x{v:g}" for v in vals]
    if strip is not None:
        k = _int(strip, "strip", 2, " (an interpolation strip needs at least its two ends)")
        start = _as_list(cfg.get("strip_from"))
        if start is None:
            start = [0.0] * n
        elif len(start) == 1 and n > 1:
            start = [_float(start[0], "strip_from") * b for b in base]
        elif len(start) != n:
            raise AsyrpUserError(f"strip_from has {len(start)} values for {n} h-functions: pass one number (a fraction "
                                 f"of the edit) or {n} coefficients")
        else:
            start = [_float(v, "strip_from") * (b if n == 1 else 1.0) for v, b in zip(start, base)]
        rows = [[s0 + (b - s0) * i / (k - 1) for s0, b in zip(start, base)] for i in range(k)]
        return rows, [f"{i / (k - 1):.2f}" for i in range(k)]
    return [list(base)], ["edit"]


def check_edit_config(cfg: DictConfig) -> dict[str, Any]:
    """Every user-fixable problem of an edit config (before any image is read or network loaded)."""
    check_complete(cfg)
    ckpts = _as_list(cfg.checkpoint)
    if not ckpts or any(c in (None, "") for c in ckpts):
        raise AsyrpUserError(f"checkpoint is required: pass {_REQUIRED_HINTS['checkpoint']}")
    ckpts = [Path(str(c)).expanduser() for c in ckpts]
    for c in ckpts:
        if not c.is_file():
            raise AsyrpUserError(f"h-function checkpoint not found: {c}. Pass checkpoint=<run>/checkpoints/hfunction.pt "
                                 "or an official *.pth file.")
    coeffs = _as_list(cfg.get("coeffs"))
    if coeffs is not None:
        if len(coeffs) != len(ckpts):
            raise AsyrpUserError(f"coeffs has {len(coeffs)} values for {len(ckpts)} checkpoints: pass one coefficient "
                                 "per checkpoint (coeffs=[1.0,0.5])")
        coeffs = [_float(c, "coeffs") for c in coeffs]
    input_dir, n_random = cfg.get("input_dir"), cfg.get("n_random")
    if (input_dir is None) == (n_random is None):
        raise AsyrpUserError("set exactly one input: input_dir=<folder or glob> (your images) or n_random=<N> "
                             "(the backbone's own samples)")
    if n_random is not None:
        _int(n_random, "n_random", 1)
    if cfg.get("n_images") is not None:
        _int(cfg.n_images, "n_images", 1)
    _int(cfg.get("batch_size", 4), "batch_size", 1)
    _int(cfg.get("seed", 0), "seed")
    _int(cfg.get("grid_rows", 16), "grid_rows", 0)
    for k in ("n_inv", "n_gen", "t0", "t_edit", "t_boost"):
        if cfg.get(k) is not None:
            _int(cfg.get(k), k)
    # the step settings given explicitly (the rest come from the checkpoint and are checked once it is read)
    given = {k: cfg.get(k) for k in ("n_inv", "n_gen", "t0", "t_edit", "t_boost")}
    t0 = given["t0"] if given["t0"] is not None else 999
    check_schedule(given["n_inv"] if given["n_inv"] is not None else 40,
                   given["n_gen"] if given["n_gen"] is not None else 40, t0,
                   given["t_edit"] if given["t_edit"] is not None else (0 if given["t_boost"] is None else t0),
                   given["t_boost"], keys={k: k for k in given})
    if cfg.get("strength") is not None:
        _float(cfg.strength, "strength")
    check_mode(cfg.get("mode"), "mode")
    _settings_rows(cfg, len(ckpts), [1.0] * len(ckpts))  # sweep / strip syntax
    dev = str(cfg.get("device") or "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise AsyrpUserError(f"device={dev} but CUDA is not available here: pass device=cpu")
    check_arch(cfg.arch)
    check_perf(cfg.get("perf"))
    return {"checkpoints": ckpts, "coeffs": coeffs}


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


def edit(cfg: DictConfig) -> dict[str, Any]:
    """Edit images (a folder or glob, or N random samples) with one or more h-functions; see conf/edit.yaml.

    Order: the config is checked, the images are scanned (unusable ones skipped and reported), the h-function files
    are read and the output folder claimed before any network is loaded. Outputs (per-image PNGs, grid.png,
    manifest.json) are written atomically, image by image: a rerun with the same settings completes only the
    missing images; another run's outputs in ``output_dir`` are never overwritten unless ``overwrite=true``.
    """
    import hashlib
    import json

    from .data.images import read_image, scan_images
    from .hfunctions import Composition
    from .perf import apply_perf, inference_context
    from .samplers import edit as asyrp_edit
    from .utils import secrets
    from .utils.io import atomic_write_json, atomic_write_png, file_digest

    req = check_edit_config(cfg)
    secrets.install_log_filter()
    ckpts: list[Path] = req["checkpoints"]
    size = int((cfg.arch.get("config") or {}).get("image_size") or (cfg.arch.get("config") or {}).get("sample_size") or 0)
    seed = int(cfg.get("seed", 0))

    # inputs (before any network): image files, or seeded random samples
    skipped: list[tuple[Path, str]] = []
    if cfg.get("input_dir") is not None:
        files, skipped = scan_images(cfg.input_dir, cfg.get("n_images"), size or 32, what="input_dir")
        ids = _unique_ids(files)
        inputs = [{"id": i, "source": str(f), "seed": seed + k} for k, (i, f) in enumerate(zip(ids, files))]
    else:
        n = int(cfg.n_random)
        inputs = [{"id": f"sample_{k:05d}", "source": "random", "seed": seed + k} for k in range(n)]
    random_inputs = cfg.get("input_dir") is None

    # the h-function files (read safely, not yet built) and the settings they carry
    payloads = [read_hfunction_file(c) for c in ckpts]
    metas = [p if isinstance(p, Mapping) and p.get("format") else {} for p in payloads]
    stored = dict((metas[0].get("edit") or {}))
    for c, m in zip(ckpts[1:], metas[1:]):
        other = m.get("edit") or {}
        if other and other.get("t_edit") != stored.get("t_edit"):
            log.warning("%s was trained with t_edit=%s, %s with %s: using %s", c, other.get("t_edit"), ckpts[0],
                        stored.get("t_edit"), stored.get("t_edit"))
    pick = lambda k, default: cfg.get(k) if cfg.get(k) is not None else stored.get(k, default)  # noqa: E731
    n_inv, n_gen, t0 = int(pick("n_inv", 40)), int(pick("n_gen", 40)), int(pick("t0", 999))
    t_edit = pick("t_edit", cfg.edit_interval.get("t_edit"))
    t_boost = pick("t_boost", cfg.edit_interval.get("t_boost"))
    mode = pick("mode", "asyrp")
    check_schedule(n_inv, n_gen, t0, t_edit, t_boost,
                   keys={k: k for k in ("n_inv", "n_gen", "t0", "t_edit", "t_boost")})
    t_edit, t_boost = int(t_edit), (None if t_boost is None else int(t_boost))
    check_mode(mode, "mode")
    base = [(req["coeffs"][i] if req["coeffs"] is not None else 1.0)
            * float(cfg.strength if cfg.get("strength") is not None else (m.get("edit") or {}).get("strength", 1.0))
            for i, m in enumerate(metas)]
    rows, labels = _settings_rows(cfg, len(ckpts), base)
    run_rows = ([[0.0] * len(ckpts)] if random_inputs else []) + rows  # random inputs: the unedited sample too

    def out_names(item_id: str) -> list[str]:
        names = [f"{item_id}.png"] if len(rows) == 1 else [f"{item_id}_{k:02d}.png" for k in range(len(rows))]
        return ([f"{item_id}_input.png"] if random_inputs else []) + names

    settings = {
        "arch": cfg.arch.get("name"), "arch_checkpoint": cfg.arch.get("checkpoint"),
        "checkpoints": [{"path": str(c), "digest": file_digest(c),
                         "kind": "asyrp-hfunction" if m else "official",
                         "attribute": (m.get("attribute") or {}).get("name") if m else None} for c, m in zip(ckpts, metas)],
        "coefficients": rows, "labels": labels, "n_inv": n_inv, "n_gen": n_gen, "t0": t0, "t_edit": t_edit,
        "t_boost": t_boost, "mode": mode, "seed": seed, "input": "random" if random_inputs else "images",
        "image_size": size,
    }
    fingerprint = hashlib.blake2b(json.dumps(settings, sort_keys=True, default=str).encode(), digest_size=12).hexdigest()

    # claim the output folder: same settings -> resume, another run's outputs -> refuse unless overwrite=true
    out = Path(str(cfg.output_dir)).expanduser()
    manifest_path = out / MANIFEST
    same_run = claim_edit_dir(out, fingerprint, bool(cfg.get("overwrite", False)))
    done = {it["id"] for it in inputs if all((out / n).is_file() for n in out_names(it["id"]))} if same_run else set()
    todo = [k for k, it in enumerate(inputs) if it["id"] not in done]
    if done:
        log.info("%s: %d of %d images already done with these settings, editing the other %d", out, len(done),
                 len(inputs), len(todo))

    def manifest(complete: bool) -> dict[str, Any]:
        return secrets.redact({
            "format": "asyrp-edit/1", "fingerprint": fingerprint, "complete": complete, **settings,
            "outputs_per_image": ["input (unedited sample)"] * random_inputs + labels,
            "inputs": [dict(it, outputs=out_names(it["id"]), done=it["id"] in done) for it in inputs],
            "skipped": [{"path": str(p), "reason": r} for p, r in skipped],
        })

    # networks
    torch.manual_seed(seed)  # random test backbones (checkpoint: null) come out the same every run
    backbone = build_backbone(cfg.arch, device=cfg.get("device") or "cpu")
    perf = check_perf(cfg.get("perf"))
    apply_perf(backbone, perf)  # speed options: auto = on when the backbone is on CUDA (off on CPU)
    size = int(backbone.image_size)
    fns = [hfunction_from_payload(p, c, backbone, cfg.arch.get("name"))[0] for p, c in zip(payloads, ckpts)]
    hfunc = fns[0] if len(fns) == 1 else Composition(fns).to(next(backbone.parameters()).device)
    a = alphas(cfg.arch)
    dev = next(backbone.parameters()).device
    coeffs = torch.tensor(run_rows, dtype=torch.float64)  # (K, n): K outputs per image, one inversion
    x_T_cached: dict[str, torch.Tensor] = {}
    if cfg.get("cache_dir") and not random_inputs and todo:  # invert each image once across runs (sweep trials)
        from .data.cache import cached_inversions

        entries = cached_inversions(str(cfg.cache_dir), backbone, a, [Path(inputs[k]["source"]) for k in todo],
                                    n_inv=n_inv, n_gen=n_gen, t0=t0, image_size=size, batch_size=int(cfg.get("batch_size", 4)))
        x_T_cached = {inputs[k]["id"]: e["x_T"] for k, e in zip(todo, entries)}

    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(manifest(False), manifest_path)
    bs = int(cfg.get("batch_size", 4))
    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="edit", unit="img", disable=(not cfg.get("progress", True)) or None)
    written: list[Path] = []
    try:
        for i in range(0, len(todo), bs):
            batch = [inputs[k] for k in todo[i:i + bs]]
            seeds = [it["seed"] for it in batch]
            if random_inputs:
                x0 = None
                shape = (int(getattr(backbone, "in_channels", 3)), size, size)
                x_T = torch.stack([torch.randn(shape, generator=torch.Generator().manual_seed(10_000_019 + s))
                                   for s in seeds]).to(dev)
            else:
                loaded = [read_image(it["source"], size) for it in batch]
                for it, (_, notes) in zip(batch, loaded):
                    if notes:
                        it["notes"] = notes
                x0 = torch.stack([x for x, _ in loaded]).to(dev)
                x_T = torch.stack([x_T_cached[it["id"]] for it in batch]).to(dev) if x_T_cached else None
            with inference_context(perf, dev):  # inference_mode (auto: on CUDA) or no_grad
                res = asyrp_edit(backbone, x0, hfunc, a=a.to(dev), n_inv=n_inv, n_gen=n_gen, t_edit=t_edit,
                                 t_boost=t_boost, strength=coeffs, mode=mode, seeds=seeds, t0=t0, x_T=x_T)
            x_edit = res.x_edit  # (K, B, C, H, W)
            for b, it in enumerate(batch):
                for k, name in enumerate(out_names(it["id"])):
                    written.append(atomic_write_png(x_edit[k, b], out / name))
                done.add(it["id"])
            atomic_write_json(manifest(False), manifest_path)  # a kill from here on loses no finished image
            bar.update(len(batch))
    finally:
        bar.close()

    # the grid: first grid_rows inputs; columns: input, then every output
    n_rows = min(int(cfg.get("grid_rows", 16)), len(inputs))
    if n_rows > 0:
        from torchvision.utils import make_grid

        grid_rows = []
        for it in inputs[:n_rows]:
            cols = [] if random_inputs else [read_image(it["source"], size)[0]]
            cols += [read_image(out / n, size)[0] for n in out_names(it["id"])]
            grid_rows.append(torch.stack(cols))
        grid = make_grid(torch.cat(grid_rows).clamp(-1, 1), nrow=grid_rows[0].shape[0], padding=1, pad_value=1.0)
        atomic_write_png(grid, out / "grid.png")
    atomic_write_json(manifest(True), manifest_path)
    log.info("edited %d images (%d already done, %d skipped as unusable) -> %s", len(todo), len(inputs) - len(todo),
             len(skipped), out)
    return {"written": written, "output_dir": out, "manifest": manifest_path, "t_edit": t_edit, "t_boost": t_boost,
            "n_gen": n_gen, "n_inv": n_inv, "done_before": len(inputs) - len(todo), "edited": len(todo),
            "skipped": [(str(p), r) for p, r in skipped], "coefficients": rows}
