"""An h-function from a config (conf/hfunction/*.yaml), sized for a backbone; weights from ``checkpoint`` load strictly.

The middle of the package's chain (modules <- build <- files): the file format builds through here, never back.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

from .modules import DeltaBlock, GlobalDirection, HFunction

__all__ = ["build_hfunction", "load_hfunction_weights"]


def _torch_load(path: str | Path) -> Any:
    return torch.load(path, map_location="cpu", weights_only=True)


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def load_hfunction_weights(module: nn.Module, path: str | Path) -> nn.Module:
    """Strictly load weights into an existing h-function: an official file (key "0"), {"state_dict": ...}, or bare."""
    obj = _torch_load(path)
    if isinstance(obj, Mapping) and isinstance(obj.get("0"), Mapping):
        sd = obj["0"]
    elif isinstance(obj, Mapping) and isinstance(obj.get("state_dict"), Mapping):
        sd = obj["state_dict"]
    elif _is_state_dict(obj):
        sd = obj
    else:
        raise ValueError(f"{path}: no h-function state dict found (keys: {sorted(map(str, obj))[:12]})")
    module.load_state_dict(dict(sd), strict=True)
    return module


_KEYS = {
    "delta_block": {"kind", "layout", "width", "zero_init", "use_temb", "dropout", "num_groups", "checkpoint", "seed"},
    "global": {"kind", "init_std", "checkpoint", "seed"},
    "global_per_t": {"kind", "init_std", "timesteps", "n_steps", "t0", "checkpoint", "seed"},
}


def _as_dict(cfg: Any) -> dict:
    try:
        from omegaconf import DictConfig, OmegaConf

        if isinstance(cfg, DictConfig):
            return dict(OmegaConf.to_container(cfg, resolve=True))  # type: ignore[arg-type]
    except ImportError:  # pragma: no cover
        pass
    return dict(cfg)


def build_hfunction(cfg: Any, backbone) -> HFunction:
    """An h-function sized for ``backbone`` from a config (see conf/hfunction/*.yaml).

    ``kind``: delta_block | global | global_per_t. For delta_block, ``layout: auto`` picks the ADM block for
    ``backbone.family == "adm"`` and the DDPM block otherwise (ddpm, ncsnpp, diffusers). ``checkpoint`` loads
    weights strictly; ``seed`` makes the random initialisation reproducible.
    """
    cfg = _as_dict(cfg)
    kind = cfg.get("kind", "delta_block")
    if kind not in _KEYS:
        raise ValueError(f"unknown h-function kind {kind!r}: use one of {sorted(_KEYS)}")
    unknown = set(cfg) - _KEYS[kind]
    if unknown:
        raise ValueError(f"unknown key(s) {sorted(unknown)} for h-function kind {kind!r}; allowed: {sorted(_KEYS[kind])}")
    seed = cfg.get("seed")
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(int(seed))
        if kind == "delta_block":
            layout = cfg.get("layout", "auto")
            if layout == "auto":
                layout = "adm" if getattr(backbone, "family", "") == "adm" else "ddpm"
            module: HFunction = DeltaBlock(
                layout,
                backbone.h_channels,
                backbone.emb_dim,
                width=cfg.get("width"),
                zero_init=bool(cfg.get("zero_init", False)),
                dropout=float(cfg.get("dropout", 0.0)),
                num_groups=int(cfg.get("num_groups", 32)),
                time_conditioned=bool(cfg.get("use_temb", True)),
            )
        elif kind == "global":
            module = GlobalDirection(backbone.h_shape, init_std=float(cfg.get("init_std", 0.2)))
        else:
            ts = cfg.get("timesteps")
            if ts is None:
                from ..schedules import timesteps

                ts = timesteps(int(cfg.get("n_steps", 40)), int(cfg.get("t0", 999)))
            module = GlobalDirection(backbone.h_shape, timesteps=ts, init_std=float(cfg.get("init_std", 0.2)))
    if cfg.get("checkpoint"):
        load_hfunction_weights(module, cfg["checkpoint"])
    p = next(backbone.parameters(), None)
    if p is not None:
        module = module.to(device=p.device)
    return module
