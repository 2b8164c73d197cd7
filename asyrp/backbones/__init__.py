"""Frozen backbones: one call for every checkpoint family.

``load_backbone(family, config, checkpoint)`` builds the network of a family from its upstream hyperparameters,
reads the checkpoint safely, converts its keys, loads them strictly and returns a frozen ``Backbone``.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping
from types import ModuleType
from typing import Any

import torch

from .base import Backbone, Encoding, UNet2DBackbone
from .checkpoints import CheckpointError, check_layout, describe_mismatch, layout_of, read_checkpoint, suggestion_text

__all__ = ["Backbone", "Encoding", "UNet2DBackbone", "CheckpointError", "FAMILIES", "family_module", "load_backbone"]

log = logging.getLogger(__name__)

#: family name -> module (imported lazily, so a family whose module is missing does not break the others)
FAMILIES = ("ddpm", "adm", "ncsnpp", "diffusers")


def family_module(family: str) -> ModuleType:
    if family not in FAMILIES:
        raise ValueError(f"unknown backbone family {family!r}; the families are {', '.join(FAMILIES)}")
    return importlib.import_module(f".{family}", __name__)


def _plain(config: Any) -> dict[str, Any] | None:
    """A plain dict from a dict or an OmegaConf DictConfig (interpolations resolved)."""
    if config is None:
        return None
    from omegaconf import OmegaConf

    if OmegaConf.is_config(config):
        return OmegaConf.to_container(config, resolve=True)  # type: ignore[return-value]
    if not isinstance(config, Mapping):
        raise TypeError(f"config must be a dict or DictConfig, got {type(config).__name__}")
    return dict(config)


def _build_and_load(module: ModuleType, family: str, config: dict, sd: dict[str, torch.Tensor]) -> Backbone:
    """Build without initialising (meta device), then take the checkpoint's tensors strictly."""
    with torch.device("meta"):
        backbone = module.build(config)
    own = layout_of(backbone.state_dict())
    if layout_of(sd) == own:
        converted = sd  # already in this module's own keys (e.g. a saved Backbone.state_dict())
    else:
        if hasattr(module, "upstream_layout"):  # report a mismatch in the checkpoint's own key names
            check_layout(layout_of(sd), module.upstream_layout(config), family=family)
        try:
            converted = module.convert_state_dict(sd, config)
        except CheckpointError:
            raise
        except (ValueError, KeyError, RuntimeError) as err:
            raise CheckpointError(
                f"checkpoint does not fit family {family!r} with the given config: {err}. {suggestion_text(layout_of(sd))}"
            ) from err
        problem = describe_mismatch(layout_of(converted), own)
        if problem is not None:  # families without an upstream layout of their own end up here
            raise CheckpointError(
                f"checkpoint does not fit family {family!r} with the given config after conversion: {problem}. "
                f"{suggestion_text(layout_of(sd))}"
            )
    backbone.load_state_dict(converted, strict=True, assign=True)
    leftover = [n for n, t in list(backbone.named_parameters()) + list(backbone.named_buffers()) if t.is_meta]
    if leftover:  # non-persistent buffers are not in a state dict: build for real and load by copy instead
        backbone = module.build(config)
        backbone.load_state_dict(converted, strict=True)
    return backbone


def load_backbone(
    family: str,
    config: Mapping[str, Any] | None = None,
    checkpoint: str | os.PathLike | Mapping | list | None = None,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    ema: bool | None = None,
) -> Backbone:
    """A frozen backbone of ``family`` built from upstream hyperparameters ``config``.

    checkpoint: a weights file (.ckpt .pt .pth .bin .safetensors), an in-memory state dict / container, a diffusers
    folder (family "diffusers"), or None for random weights (tiny test configs only; logged as a warning).
    ema: where a checkpoint holds raw and EMA weights, None/True take the EMA (what the published models sample
    with), False the raw weights; see ``checkpoints.read_checkpoint``.
    Keys are always loaded strictly; any mismatch raises ``CheckpointError`` naming the keys and the fitting arch.
    """
    module = family_module(family)
    config = _plain(config)
    if family == "diffusers":
        backbone = module.load(config, checkpoint, ema=ema)
    elif checkpoint is None:
        log.warning("backbone %r built with RANDOM weights (checkpoint=None): outputs are meaningless", family)
        backbone = module.build(config)
    else:
        sd = read_checkpoint(checkpoint, ema=ema)
        backbone = _build_and_load(module, family, config, sd)
    return backbone.to(device=device, dtype=dtype).freeze()
