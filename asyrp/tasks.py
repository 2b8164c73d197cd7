"""The two jobs, as functions of a composed config (train.py / edit.py are thin @hydra.main wrappers).

``train(cfg) -> (metric_dict, object_dict)``: train an h-function for one attribute; a sweep optimises
``metric_dict[cfg.optimized_metric]``.
``edit(cfg) -> dict``: edit a folder of images with a trained (or official) h-function and write PNGs.

Every problem the user can fix is checked before any network pass or output file and raised as ONE
``AsyrpUserError`` naming the problem and the fix.
"""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Mapping

import torch
from omegaconf import DictConfig, OmegaConf

from .utils.errors import AsyrpUserError

log = logging.getLogger(__name__)


def _plain(cfg: Any) -> Any:
    from .utils.config import plain

    return plain(cfg)


# -- validation ------------------------------------------------------------------------------------------------
def check_schedule(n_inv: int, n_gen: int, t0: int, t_edit: int | None, t_boost: int | None) -> None:
    """Impossible step settings, caught before anything runs."""
    if not (0 < int(t0) <= 999):
        raise AsyrpUserError(f"t0={t0} must be in 1..999 (the 1000-step scale): set model.t0")
    if int(n_inv) < 2 or int(n_gen) < 2:
        raise AsyrpUserError(f"n_inv={n_inv} and n_gen={n_gen} must both be >= 2 (a DDIM walk needs two timesteps)")
    if t_edit is None:
        raise AsyrpUserError("edit_interval.t_edit is not set: choose an edit_interval config or pass edit_interval.t_edit=<t>")
    if not (0 <= int(t_edit) <= int(t0)):
        raise AsyrpUserError(f"t_edit={t_edit} must lie in [0, t0={t0}]: edits happen while t >= t_edit, "
                             "so set edit_interval.t_edit <= model.t0")
    if t_boost is not None and not (0 <= int(t_boost) <= int(t0)):
        raise AsyrpUserError(f"t_boost={t_boost} must lie in [0, t0={t0}]: set edit_interval.t_boost")


def _check_file(path: Any, what: str, fix: str) -> None:
    if path is None:
        return
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise AsyrpUserError(f"{what} not found: {p}. {fix}")


def check_train_config(cfg: DictConfig) -> None:
    m, ei = cfg.model, cfg.edit_interval
    check_schedule(m.n_inv, m.n_gen, m.t0, ei.get("t_edit"), ei.get("t_boost"))
    loss = m.get("loss", {})
    for k in ("w_clip", "w_recon"):
        if float(loss.get(k, 0.0)) < 0:
            raise AsyrpUserError(f"model.loss.{k}={loss.get(k)} must be >= 0")
    if float(m.optimizer.get("lr", 1.0)) <= 0:
        raise AsyrpUserError(f"model.optimizer.lr={m.optimizer.get('lr')} must be > 0")
    if int(m.get("n_iter", 1)) < 1:
        raise AsyrpUserError(f"model.n_iter={m.get('n_iter')} must be >= 1")
    if not list(cfg.attribute.get("source") or []) or not list(cfg.attribute.get("target") or []):
        raise AsyrpUserError("attribute.source and attribute.target must each list at least one text")
    _check_file(cfg.arch.get("checkpoint"), f"backbone checkpoint of arch {cfg.arch.get('name')!r}",
                "Download it (see the comment in conf/arch/<name>.yaml), or set ASYRP_CHECKPOINTS / arch.checkpoint.")
    _check_file(cfg.get("ckpt_path"), "ckpt_path (checkpoint to resume from)",
                "Pass the last.ckpt of the run to resume (…/checkpoints/last.ckpt) or ckpt_path=null.")
    if cfg.dataset.kind == "folder":
        from .data.images import list_images

        list_images(cfg.dataset.path, cfg.dataset.n_images)


# -- building blocks -------------------------------------------------------------------------------------------
def build_backbone(arch: Mapping[str, Any], device: str | torch.device = "cpu"):
    from .backbones import load_backbone

    try:
        return load_backbone(arch["family"], arch.get("config"), arch.get("checkpoint"), device=device)
    except (FileNotFoundError, ValueError, KeyError) as err:
        raise AsyrpUserError(f"could not load backbone {arch.get('name')!r}: {err}") from err


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

    from .clip import load_clip
    from .data import AsyrpDataModule
    from .hfunctions import build_hfunction
    from .module import AsyrpModule

    check_train_config(cfg)
    pl.seed_everything(int(cfg.seed), workers=True)

    backbone = build_backbone(cfg.arch)
    a = alphas(cfg.arch)
    clip = load_clip(cfg.clip)
    hf_cfg = _plain(cfg.hfunction)
    try:
        hfunc = build_hfunction(hf_cfg, backbone)
    except (ValueError, FileNotFoundError) as err:
        raise AsyrpUserError(f"could not build the h-function from hfunction config: {err}") from err

    datamodule = AsyrpDataModule(**_plain(cfg.dataset)).bind(backbone, a, n_inv=cfg.model.n_inv,
                                                               n_gen=cfg.model.n_gen, t0=cfg.model.t0)
    if int(os.environ.get("LOCAL_RANK", 0)) == 0:
        # build the cache here, in the launching process: bad images fail with our error before fit starts;
        # prepare_data inside fit then finds every entry and computes nothing
        datamodule.prepare_data()

    m = cfg.model
    module = AsyrpModule(
        hfunc, backbone, clip, a,
        source=list(cfg.attribute.source), target=list(cfg.attribute.target),
        optimizer=instantiate(m.optimizer), scheduler=instantiate(m.scheduler) if m.get("scheduler") else None,
        n_inv=m.n_inv, n_gen=m.n_gen, t0=m.t0, t_edit=cfg.edit_interval.t_edit, t_boost=cfg.edit_interval.get("t_boost") or 0,
        mode=m.mode, strength=m.strength, loss=_plain(m.loss), seed=cfg.seed,
        config={"hfunction": hf_cfg, "arch": {k: _plain(cfg.arch.get(k)) for k in ("name", "family", "beta_schedule")},
                "attribute": _plain(cfg.attribute), "model": {k: v for k, v in _plain(m).items() if k not in ("optimizer", "scheduler")},
                "run": _plain(cfg)},
    )
    callbacks = instantiate_list(cfg.get("callbacks"))
    loggers = instantiate_list(cfg.get("logger"))
    if not loggers:  # nothing to report a learning rate to (logger=null / ~logger)
        callbacks = [c for c in callbacks if not isinstance(c, pl.callbacks.LearningRateMonitor)]
    for lg in loggers:
        if isinstance(lg, pl.loggers.WandbLogger) and lg.save_dir and "WANDB_DIR" not in os.environ:
            # spawned ranks attach to the launcher's run but resolve media paths from WANDB_DIR (default: cwd)
            os.environ["WANDB_DIR"] = str(lg.save_dir)
    trainer: pl.Trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    # hparams reach the loggers through Lightning inside fit (on rank 0 of the training processes): creating the
    # W&B run here, in the launcher, would leave spawned ranks attached to a run they cannot write media to

    if cfg.get("train", True):
        trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.get("ckpt_path"))
    metric_dict = {k: float(v) for k, v in trainer.callback_metrics.items()}
    objects = {"cfg": cfg, "module": module, "datamodule": datamodule, "trainer": trainer,
               "callbacks": callbacks, "loggers": loggers, "backbone": backbone, "clip": clip}
    return metric_dict, objects


# -- edit ------------------------------------------------------------------------------------------------------
def load_hfunction_checkpoint(path: str | Path, backbone, arch_name: str | None = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """An h-function from our ``hfunction.pt`` (rebuilt from its stored config, strict) or an official ``.pth``."""
    from .callbacks import HFUNCTION_FORMAT
    from .hfunctions import build_hfunction, load_official_hfunction

    path = Path(str(path)).expanduser()
    if not path.is_file():
        raise AsyrpUserError(f"h-function checkpoint not found: {path}. Pass checkpoint=<run>/checkpoints/hfunction.pt "
                             "or an official *.pth file.")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise AsyrpUserError(f"cannot read h-function checkpoint {path} ({type(err).__name__}: {err})") from err
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
            return hfunc.eval(), dict(obj)
        hfunc = load_official_hfunction(path)
    except AsyrpUserError:
        raise
    except (ValueError, KeyError, RuntimeError) as err:
        raise AsyrpUserError(f"h-function checkpoint {path} does not fit: {err}") from err
    p = next(backbone.parameters())
    return hfunc.to(p.device).eval(), {}


def edit(cfg: DictConfig) -> dict[str, Any]:
    """Edit every image of ``cfg.input_dir``; PNGs appear in ``cfg.output_dir`` only once all are done."""
    from .data.images import list_images, load_image
    from .samplers import edit as asyrp_edit

    files = list_images(cfg.input_dir, cfg.get("n_images"))  # folder problems first
    torch.manual_seed(int(cfg.seed))  # random test backbones (checkpoint: null) come out the same every run
    backbone = build_backbone(cfg.arch, device=cfg.get("device") or "cpu")
    hfunc, meta = load_hfunction_checkpoint(cfg.checkpoint, backbone, cfg.arch.get("name"))
    stored = meta.get("edit", {})
    pick = lambda k, default: cfg.get(k) if cfg.get(k) is not None else stored.get(k, default)  # noqa: E731
    n_inv, n_gen, t0 = pick("n_inv", 40), pick("n_gen", 40), pick("t0", 999)
    t_edit = pick("t_edit", cfg.edit_interval.get("t_edit"))
    t_boost = pick("t_boost", cfg.edit_interval.get("t_boost"))
    mode, strength = pick("mode", "asyrp"), float(pick("strength", 1.0))
    check_schedule(n_inv, n_gen, t0, t_edit, t_boost)
    size = int(backbone.image_size)
    x0_all = torch.stack([load_image(f, size) for f in files])  # every image read before any work is done
    a = alphas(cfg.arch)
    dev = next(backbone.parameters()).device

    out = Path(str(cfg.output_dir)).expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    from .utils.io import atomic_write_png

    try:
        bs = max(int(cfg.get("batch_size", 4)), 1)
        for i in range(0, len(files), bs):
            x0 = x0_all[i:i + bs].to(dev)
            seeds = [int(cfg.seed) + j for j in range(i, i + x0.shape[0])]
            res = asyrp_edit(backbone, x0, hfunc, a=a.to(dev), n_inv=n_inv, n_gen=n_gen, t_edit=t_edit,
                             t_boost=t_boost, strength=strength, mode=mode, seeds=seeds, t0=t0)
            for f, img in zip(files[i:i + bs], res.x_edit):
                atomic_write_png(img, tmp / f"{f.stem}.png")
        out.mkdir(parents=True, exist_ok=True)
        written = []
        for f in sorted(tmp.iterdir()):
            os.replace(f, out / f.name)
            written.append(out / f.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("edited %d images -> %s", len(written), out)
    return {"written": written, "t_edit": t_edit, "t_boost": t_boost, "n_gen": n_gen}
