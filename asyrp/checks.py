"""Config checks: every problem the user can fix, found before any network pass or output file, raised as ONE
``AsyrpUserError`` naming the key and the fix (train and edit configs, the step schedule, the arch, the speed
options, a checkpoint to resume from) and the edit settings turned into one (K, n) coefficient matrix.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from omegaconf import DictConfig, OmegaConf

from .config import as_float, as_int
from .guide import check_guide_config
from .keep import check_keep_config
from .ops.errors import AsyrpUserError
from .plan import check_hold, check_mode, check_schedule, plan_of
from .twins import check_twins_config

if TYPE_CHECKING:
    from .perf import PerfConfig

REQUIRED_HINTS = {
    "checkpoint": "checkpoint=<run>/checkpoints/hfunction.pt (or an official .pth; checkpoint=[a.pt,b.pt] composes)",
}


def check_complete(cfg: DictConfig) -> None:
    """Every ``???`` set and every interpolation resolvable, each failure naming its key (before any work)."""
    from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue

    from .ops.errors import user_error_from

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
        raise AsyrpUserError(f"{k} is required but not set (???): pass {REQUIRED_HINTS.get(k, k + '=<value>')}{more}")
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


def check_file(path: Any, what: str, fix: str) -> None:
    if path is None:
        return
    p = Path(str(path)).expanduser()
    if not p.exists():
        raise AsyrpUserError(f"{what} not found: {p}. {fix}")


def check_arch(arch: Mapping[str, Any]) -> None:
    from .backbones import FAMILIES

    name = arch.get("name")
    if arch.get("family") not in FAMILIES:
        raise AsyrpUserError(
            f"arch.family={arch.get('family')!r} (arch {name!r}) is not one of {', '.join(FAMILIES)}: "
            f"fix conf/arch/{name}.yaml or pass arch.family=<family>"
        )
    if arch.get("beta_schedule", "linear") not in ("linear", "cosine"):
        raise AsyrpUserError(f"arch.beta_schedule={arch.get('beta_schedule')!r} must be linear or cosine")
    check_file(
        arch.get("checkpoint"),
        f"backbone checkpoint of arch {name!r}",
        "Download it (see the comment in conf/arch/<name>.yaml), or set ASYRP_CHECKPOINTS / arch.checkpoint.",
    )


def check_hfunction_mode(mode: Any, key: str, hfunctions: Any) -> None:
    """Every h-function config is applied by a mode of its space (h, eps or x): one error naming the mode to set."""
    from .hfunctions.build import check_space_mode

    for hf_cfg in hfunctions if mode is not None else ():
        try:
            check_space_mode(hf_cfg, mode, key)
        except ValueError as err:
            raise AsyrpUserError(str(err)) from err


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


def check_train_config(cfg: DictConfig) -> tuple[list[Path], list[tuple[Path, str]]] | None:
    """Every user-fixable problem of a training config; for an image folder, (used files, [(skipped, reason)])."""
    check_complete(cfg)
    m = cfg.model
    plan_of(cfg.plan)  # n_inv, n_gen, t0, t_edit, t_boost, spacing, mode
    check_hfunction_mode(cfg.plan.get("mode"), "plan.mode", [cfg.get("hfunction")])
    loss = m.get("loss", {})
    for k in ("w_clip", "w_recon", "w_id"):
        if as_float(loss.get(k, 0.0), f"model.loss.{k}") < 0:
            raise AsyrpUserError(f"model.loss.{k}={loss.get(k)} must be >= 0")
    check_identity_weights(cfg)
    if loss.get("clip_reference", "x0") not in ("x0", "P_orig"):
        raise AsyrpUserError(
            f"model.loss.clip_reference={loss.get('clip_reference')!r} must be x0 (official) or P_orig"
        )
    check_keep_config(loss.get("keep"), cfg.arch.get("name"), cfg.plan.get("mode"))  # model.loss.keep (asyrp.keep)
    check_guide_config(loss.get("guide"), cfg.arch.get("name"))  # model.loss.guide (asyrp.guide)
    if as_float(m.optimizer.get("lr", 1.0), "model.optimizer.lr") <= 0:
        raise AsyrpUserError(f"model.optimizer.lr={m.optimizer.get('lr')} must be > 0")
    as_int(m.get("n_iter", 1), "model.n_iter", 1)
    as_float(m.get("strength", 1.0), "model.strength")
    if m.get("edit_strength") is not None:
        as_float(m.edit_strength, "model.edit_strength")
    if not list(cfg.attribute.get("source") or []) or not list(cfg.attribute.get("target") or []):
        raise AsyrpUserError("attribute.source and attribute.target must each list at least one text")
    check_arch(cfg.arch)
    check_perf(cfg.get("perf"))
    check_file(
        cfg.get("ckpt_path"),
        "ckpt_path (checkpoint to resume from)",
        "Pass the last.ckpt of the run to resume (…/checkpoints/last.ckpt) or ckpt_path=null.",
    )
    as_int(cfg.dataset.get("n_images", 1), "dataset.n_images", 1)
    as_int(cfg.dataset.get("batch_size", 1), "dataset.batch_size", 1)
    if cfg.dataset.get("cache_batch_size") is not None:
        as_int(cfg.dataset.cache_batch_size, "dataset.cache_batch_size", 1, " (or null: max(dataset.batch_size, 4))")
    accounted = None
    if cfg.dataset.kind == "folder":  # every file of the folder: used, or skipped with its reason
        from .data.images import scan_images

        accounted = scan_images(cfg.dataset.path, cfg.dataset.n_images, what="dataset.path")
    check_twins_config(loss.get("guide"), accounted[0] if accounted else None)  # guide=twins (asyrp.twins)
    return accounted


def check_identity_weights(cfg: DictConfig) -> None:
    """model.loss.w_id > 0 needs the user's IR-SE50 file (identity.weights) before any work starts."""
    from .metrics.identity import identity_absent

    w_id = as_float(cfg.model.get("loss", {}).get("w_id", 0.0), "model.loss.w_id")
    lacks = identity_absent((cfg.get("identity") or {}).get("weights")) if w_id > 0 else ""
    if lacks:
        raise AsyrpUserError(f"model.loss.w_id={w_id} trains with the IR-SE50 identity loss: {lacks}, or set w_id=0")


def check_resume_checkpoint(path: str | Path, auto: bool = False) -> None:
    """The Lightning checkpoint a run resumes from, read safely (tensors only) before any work: one error naming the
    file and the fix for a truncated/damaged file, pickled code, or a file that is not a training checkpoint.
    ``auto``: the run's own last.ckpt, found by rerunning the same command (not passed as ckpt_path)."""
    from collections.abc import Mapping as _Mapping

    from .backbones.checkpoints import CheckpointError, load_file

    path = Path(str(path)).expanduser()
    fix = (
        f"delete {path} to start this run again from scratch (or pass ckpt_path=<another last.ckpt>)"
        if auto
        else "pass ckpt_path=<run>/checkpoints/last.ckpt of an intact run, or ckpt_path=null to start afresh"
    )
    try:
        obj = load_file(path)
    except CheckpointError as err:
        msg = str(err)
        if err.refused:
            raise AsyrpUserError(
                f"cannot resume from {path}: it contains pickled Python objects besides tensors "
                f"({err.refused}); loading it is refused for safety (it could run code): {fix}"
            ) from err
        detail = msg.split(" (", 1)[-1].split("):", 1)[0] if " (" in msg else msg
        raise AsyrpUserError(
            f"cannot resume from {path}: the file is truncated, damaged or not a torch checkpoint ({detail}): {fix}"
        ) from err
    if not (isinstance(obj, _Mapping) and "state_dict" in obj and "global_step" in obj and "loops" in obj):
        raise AsyrpUserError(
            f"cannot resume from {path}: it is not a Lightning training checkpoint (last.ckpt); "
            f"hfunction.pt / .pth files are for edit.py: {fix}"
        )


# -- edit coefficients -----------------------------------------------------------------------------------------
def as_list(v: Any) -> list | None:
    if v is None:
        return None
    if OmegaConf.is_config(v):
        v = OmegaConf.to_container(v, resolve=True)
    return list(v) if isinstance(v, (list, tuple)) else [v]


def _coefficient_rows(cfg: DictConfig, n: int, base: list[float]) -> tuple[list[list[float]], list[str]]:
    """Coefficient rows (K, n) of the outputs per image, and a label for each: one edit, a strength sweep
    (``sweep``), or an interpolation strip of ``strip`` steps from ``strip_from`` to the edit."""
    sweep, strip = as_list(cfg.get("sweep")), cfg.get("strip")
    if sweep is not None and strip is not None:
        raise AsyrpUserError("sweep and strip are both set: choose one (sweep=[0.5,1,1.5] or strip=5)")
    if sweep is not None:
        if not sweep:
            raise AsyrpUserError("sweep=[] lists no strengths: pass e.g. sweep=[0,0.5,1,1.5] or sweep=null")
        vals = [as_float(v, "sweep") for v in sweep]
        return [[v * b for b in base] for v in vals], [f"x{v:g}" for v in vals]
    if strip is not None:
        k = as_int(strip, "strip", 2, " (an interpolation strip needs at least its two ends)")
        start = as_list(cfg.get("strip_from"))
        if start is None:
            start = [0.0] * n
        elif len(start) == 1 and n > 1:
            start = [as_float(start[0], "strip_from") * b for b in base]
        elif len(start) != n:
            raise AsyrpUserError(
                f"strip_from has {len(start)} values for {n} h-functions: pass one number (a fraction "
                f"of the edit) or {n} coefficients"
            )
        else:
            start = [as_float(v, "strip_from") * (b if n == 1 else 1.0) for v, b in zip(start, base)]
        rows = [[s0 + (b - s0) * i / (k - 1) for s0, b in zip(start, base)] for i in range(k)]
        return rows, [f"{i / (k - 1):.2f}" for i in range(k)]
    return [list(base)], ["edit"]


@dataclass
class EditCoefficients:
    """The outputs per image of an edit run: ``matrix`` (K, n) float64, row k = one output, column i = the
    coefficient of h-function i (strength x coeffs x sweep/strip, all applied), and a label per row."""

    matrix: torch.Tensor
    labels: list[str]

    @property
    def rows(self) -> list[list[float]]:
        return self.matrix.tolist()


def edit_coefficients(cfg: DictConfig, n: int, stored_strengths: list[float | None] | None = None) -> EditCoefficients:
    """The one reading of the edit settings: coeffs (one per h-function, default 1) x strength (``strength``, else
    the strength stored in each file, else 1), then a sweep of strengths or an interpolation strip over that edit."""
    coeffs = as_list(cfg.get("coeffs"))
    if coeffs is not None:
        if len(coeffs) != n:
            raise AsyrpUserError(
                f"coeffs has {len(coeffs)} values for {n} checkpoints: pass one coefficient "
                "per checkpoint (coeffs=[1.0,0.5])"
            )
        coeffs = [as_float(c, "coeffs") for c in coeffs]
    if cfg.get("strength") is not None:
        strengths = [as_float(cfg.strength, "strength")] * n
    else:
        strengths = [1.0 if s is None else float(s) for s in (stored_strengths or [None] * n)]
    base = [(coeffs[i] if coeffs is not None else 1.0) * strengths[i] for i in range(n)]
    rows, labels = _coefficient_rows(cfg, n, base)
    return EditCoefficients(torch.tensor(rows, dtype=torch.float64), labels)


def check_edit_config(cfg: DictConfig) -> list[Path]:
    """Every user-fixable problem of an edit config (before any image is read or network loaded); the checkpoints."""
    check_complete(cfg)
    ckpts = as_list(cfg.checkpoint)
    if not ckpts or any(c in (None, "") for c in ckpts):
        raise AsyrpUserError(f"checkpoint is required: pass {REQUIRED_HINTS['checkpoint']}")
    ckpts = [Path(str(c)).expanduser() for c in ckpts]
    for c in ckpts:
        if not c.is_file():
            raise AsyrpUserError(
                f"h-function checkpoint not found: {c}. Pass checkpoint=<run>/checkpoints/hfunction.pt "
                "or an official *.pth file."
            )
    input_dir, n_random = cfg.get("input_dir"), cfg.get("n_random")
    if (input_dir is None) == (n_random is None):
        raise AsyrpUserError(
            "set exactly one input: input_dir=<folder or glob> (your images) or n_random=<N> "
            "(the backbone's own samples)"
        )
    if n_random is not None:
        as_int(n_random, "n_random", 1)
    if cfg.get("n_images") is not None:
        as_int(cfg.n_images, "n_images", 1)
    as_int(cfg.get("batch_size", 4), "batch_size", 1)
    as_int(cfg.get("seed", 0), "seed")
    as_int(cfg.get("grid_rows", 16), "grid_rows", 0)
    p = cfg.plan
    for k in ("n_inv", "n_gen", "t0", "t_edit", "t_boost"):
        if p.get(k) is not None:
            as_int(p.get(k), f"plan.{k}")
    # the step settings given explicitly (the rest come from the checkpoint and are checked once it is read)
    given = {k: p.get(k) for k in ("n_inv", "n_gen", "t0", "t_edit", "t_boost")}
    t0 = given["t0"] if given["t0"] is not None else 999
    check_schedule(
        given["n_inv"] if given["n_inv"] is not None else 40,
        given["n_gen"] if given["n_gen"] is not None else 40,
        t0,
        given["t_edit"] if given["t_edit"] is not None else (0 if given["t_boost"] is None else t0),
        given["t_boost"],
    )
    check_mode(p.get("mode"), "plan.mode")
    if p.get("hold") is not None or p.get("hold_dilate") is not None:  # the mode may come from the file: checked there
        keys = {k: f"plan.{k}" for k in ("hold", "hold_dilate", "mode")}
        check_hold(p.get("hold"), p.get("hold_dilate") or 0, p.get("mode") or "asyrp", keys)
    edit_coefficients(cfg, len(ckpts))  # coeffs, strength, sweep / strip syntax
    dev = str(cfg.get("device") or "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise AsyrpUserError(f"device={dev} but CUDA is not available here: pass device=cpu")
    check_arch(cfg.arch)
    check_perf(cfg.get("perf"))
    return ckpts
