"""An h-function from a config (conf/hfunction/*.yaml), sized for a backbone; weights from ``checkpoint`` load strictly.

The middle of the package's chain (modules <- build <- files): the file format builds through here, never back.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .constrained import from_stored
from .modules import DeltaBlock, GlobalDirection, HFunction


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
    "delta_block": {
        "kind",
        "layout",
        "width",
        "kernel_size",
        "zero_init",
        "use_temb",
        "dropout",
        "num_groups",
        "checkpoint",
        "seed",
        "space",
        "constraints",
    },
    "global": {"kind", "init_std", "checkpoint", "seed", "space", "constraints"},
    "global_per_t": {"kind", "init_std", "timesteps", "n_steps", "t0", "checkpoint", "seed", "space", "constraints"},
}

# The space an h-function's output is added to, and the walk modes that add it there (asyrp.samplers.edit_eps): h
# (the bottleneck, the paper's method), or image-shaped eps / x (the paper's baselines, Sec. 3).
SPACE_MODES = {"h": ("asyrp", "symmetric"), "eps": ("eps_shift",), "x": ("x_shift",)}


def hfunction_space(cfg: Mapping[str, Any] | None) -> str:
    """``space`` of an h-function config: h when absent (every config and file written before image spaces)."""
    space = (cfg or {}).get("space") or "h"
    if space not in SPACE_MODES:
        raise ValueError(f"unknown h-function space {space!r}: use one of {sorted(SPACE_MODES)}")
    return space


def space_shape(space: str, backbone) -> tuple[int, ...]:
    """The shape of one row of what an h-function of this space is applied to: h, or an image (eps and x_t)."""
    if space == "h":
        return tuple(int(v) for v in backbone.h_shape)
    return (int(backbone.in_channels), int(backbone.image_size), int(backbone.image_size))


def check_space_mode(cfg: Mapping[str, Any] | None, mode: str, key: str) -> None:
    """An h-function acts in its space only through the modes that apply it there: ValueError naming the fix."""
    space, modes = hfunction_space(cfg), SPACE_MODES[hfunction_space(cfg)]
    if mode not in modes:
        raise ValueError(
            f"{key}={mode!r} cannot apply an h-function of space {space!r} (it is added to "
            f"{'the bottleneck h' if space == 'h' else space}): set {key}={modes[0]}"
        )


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
    ``backbone.family == "adm"`` and the DDPM block otherwise (ddpm, ncsnpp, diffusers). ``space`` (global kinds
    only): h (default), or eps / x for an image-shaped direction applied by mode eps_shift / x_shift.
    ``checkpoint`` loads weights strictly; ``seed`` makes the random initialisation reproducible. ``constraints``
    (as a file stores them: shapes only) rebuilds the fixed layer after f; ``asyrp.build.hfunction`` makes it from
    the ``constraint`` group's files.
    """
    cfg = _as_dict(cfg)
    kind = cfg.get("kind", "delta_block")
    if kind not in _KEYS:
        raise ValueError(f"unknown h-function kind {kind!r}: use one of {sorted(_KEYS)}")
    unknown = set(cfg) - _KEYS[kind]
    if unknown:
        raise ValueError(
            f"unknown key(s) {sorted(unknown)} for h-function kind {kind!r}; allowed: {sorted(_KEYS[kind])}"
        )
    space = hfunction_space(cfg)
    if kind == "delta_block" and space != "h":
        raise ValueError(
            f"kind delta_block acts on the bottleneck h only (space {space!r} asked): use kind global or "
            "global_per_t for an eps- or x-space direction"
        )
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
                kernel_size=int(cfg.get("kernel_size") or 1),
            )
        elif kind == "global":
            module = GlobalDirection(space_shape(space, backbone), init_std=float(cfg.get("init_std", 0.2)))
        else:
            ts = cfg.get("timesteps")
            if ts is None:
                from ..schedules import timesteps

                ts = timesteps(int(cfg.get("n_steps", 40)), int(cfg.get("t0", 999)))
            shape = space_shape(space, backbone)
            module = GlobalDirection(shape, timesteps=ts, init_std=float(cfg.get("init_std", 0.2)))
    if cfg.get("constraints"):  # a stored fixed layer (asyrp.hfunctions.constrained): its buffers load with the weights
        if space != "h":
            raise ValueError(f"constraints act on delta_h in h, not on an h-function of space {space!r}")
        module = from_stored(module, cfg["constraints"], space_shape(space, backbone))
    if cfg.get("checkpoint"):
        load_hfunction_weights(module, cfg["checkpoint"])
    p = next(backbone.parameters(), None)
    if p is not None:
        module = module.to(device=p.device)
    return module
