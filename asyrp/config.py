"""Composing the Hydra configs from Python (notebooks, tests) exactly as train.py / edit.py would."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf, open_dict

from .ops.errors import AsyrpUserError

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def compose(
    config_name: str = "train",
    overrides: Sequence[str] = (),
    *,
    output_dir: str | Path | None = None,
    conf_dir: str | Path = CONF_DIR,
) -> DictConfig:
    """The composed config with ``${hydra:...}`` usable (HydraConfig is set) and, if given, ``output_dir`` as the
    run folder (paths.output_dir and hydra.runtime.output_dir)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(Path(conf_dir).resolve()), version_base="1.3"):
        cfg = hydra_compose(config_name=config_name, overrides=list(overrides), return_hydra_config=True)
    with open_dict(cfg):
        if output_dir is not None:
            cfg.hydra.runtime.output_dir = str(output_dir)
            cfg.paths.output_dir = str(output_dir)
        if cfg.hydra.runtime.get("cwd") is None:
            cfg.hydra.runtime.cwd = str(Path.cwd())
    HydraConfig.instance().set_config(cfg)
    return cfg


def plain(cfg: Any, drop: Sequence[str] = ("hydra",)) -> Any:
    """A resolved plain container of ``cfg`` without Hydra's own section."""
    if not OmegaConf.is_config(cfg):
        return cfg
    if isinstance(cfg, DictConfig):
        return {k: plain(cfg[k], ()) for k in cfg if k not in drop}
    return OmegaConf.to_container(cfg, resolve=True)


def as_int(value: Any, key: str, lo: int | None = None, hint: str = "") -> int:
    try:
        if isinstance(value, bool) or float(value) != int(float(value)):
            raise ValueError
        v = int(float(value))
    except (TypeError, ValueError):
        raise AsyrpUserError(f"{key}={value!r} must be an integer{hint}") from None
    if lo is not None and v < lo:
        raise AsyrpUserError(f"{key}={value} must be >= {lo}{hint}")
    return v


def as_float(value: Any, key: str) -> float:
    try:
        if isinstance(value, bool):
            raise ValueError
        v = float(value)
    except (TypeError, ValueError):
        raise AsyrpUserError(f"{key}={value!r} must be a number") from None
    if v != v or v in (float("inf"), float("-inf")):
        raise AsyrpUserError(f"{key}={value!r} must be a finite number")
    return v
