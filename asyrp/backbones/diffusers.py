"""Family ``diffusers``: a local ``UNet2DModel`` folder (config.json + diffusion_pytorch_model.safetensors / .bin),
e.g. google/ddpm-ema-celebahq-256 downloaded beforehand. Loaded as it is; nothing is ever fetched.

``config`` is optional: with a folder it lists ``UNet2DModel`` settings the folder must have (checked, so an arch
config cannot silently point at another model); without a checkpoint it is the full set of kwargs of a random test
net. The weights are the model's own keys, so ``convert_state_dict`` only has to check them.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .base import UNet2DBackbone
from .checkpoints import CheckpointError, Layout, describe_mismatch, layout_of, read_checkpoint, suggestion_text

FAMILY = "diffusers"
log = logging.getLogger(__name__)

_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")


class DiffusersBackbone(UNet2DBackbone):
    family = FAMILY


def _unet_class():
    from diffusers import UNet2DModel

    return UNet2DModel


def _resolved(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full UNet2DModel config (defaults filled in), without diffusers' bookkeeping keys."""
    with torch.device("meta"):
        unet = _unet_class().from_config(dict(config))
    return {k: v for k, v in dict(unet.config).items() if not k.startswith("_")}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


def _eps_channels(unet) -> int:
    # a learned-variance net appends as many variance channels as it has image channels
    out, inp = unet.config.out_channels, unet.config.in_channels
    return inp if out == 2 * inp else out


def _wrap(unet) -> DiffusersBackbone:
    size = unet.config.sample_size
    cfg = {
        **{k: v for k, v in dict(unet.config).items() if not k.startswith("_")},
        "image_size": size if isinstance(size, int) else size[0],
    }
    return DiffusersBackbone(unet, cfg, eps_channels=_eps_channels(unet))


def build(config: Mapping[str, Any] | None) -> DiffusersBackbone:
    """A randomly initialised ``UNet2DModel`` from its kwargs."""
    if not config:
        raise ValueError("family 'diffusers' needs either a checkpoint folder or a config of UNet2DModel kwargs")
    return _wrap(_unet_class().from_config(dict(config)))


def upstream_layout(config: Mapping[str, Any] | None) -> Layout:
    """Keys and shapes of the weights file of a folder with this config."""
    if not config:
        raise ValueError("no layout without a config")
    with torch.device("meta"):
        unet = _unet_class().from_config(dict(config))
    return layout_of(unet.state_dict())


def convert_state_dict(upstream_sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The folder's weights are UNet2DModel keys already: check them and add the backbone's ``unet.`` prefix."""
    expected = upstream_layout(config)
    problem = describe_mismatch(layout_of(upstream_sd), expected)
    if problem is not None:
        raise CheckpointError(
            f"checkpoint does not fit family 'diffusers' with the given UNet2DModel config: {problem}. "
            f"{suggestion_text(layout_of(upstream_sd))}"
        )
    return {"unet." + k: v for k, v in upstream_sd.items()}


def _folder_config(folder: Path) -> tuple[Path, dict[str, Any]]:
    """(the folder holding the UNet, its config.json); a pipeline folder's ``unet/`` subfolder is used if present."""
    for cand in (folder, folder / "unet"):
        cfg_path = cand / "config.json"
        if cfg_path.is_file():
            with open(cfg_path) as f:
                cfg = json.load(f)
            if cfg.get("_class_name", "UNet2DModel") == "UNet2DModel":
                return cand, cfg
            if cand == folder and (folder / "unet" / "config.json").is_file():
                continue
            raise CheckpointError(
                f"{cfg_path} describes a {cfg.get('_class_name')}, not a UNet2DModel: only UNet2DModel folders are "
                "supported by family 'diffusers'"
            )
    raise CheckpointError(
        f"{folder} is not a diffusers UNet2DModel folder (no config.json in it or in {folder / 'unet'}). Save one "
        "with `UNet2DModel.save_pretrained(folder)` or download the model folder first."
    )


def load(config: Mapping[str, Any] | None, checkpoint: Any, *, ema: bool | None = None) -> DiffusersBackbone:
    """A backbone from a local folder (config optional, checked), a weights file or dict (config required), or a
    random net (checkpoint None)."""
    if checkpoint is None:
        log.warning("backbone 'diffusers' built with RANDOM weights (checkpoint=None): outputs are meaningless")
        return build(config)
    if isinstance(checkpoint, (str, os.PathLike)) and Path(checkpoint).expanduser().is_dir():
        folder, folder_cfg = _folder_config(Path(checkpoint).expanduser())
        if config:
            have = _resolved(folder_cfg)
            diff = [k for k, v in config.items() if k in have and not _same(have[k], v)]
            unknown = [k for k in config if k not in have]
            if diff or unknown:
                shown = "; ".join(f"{k}: folder {have[k]!r}, config {config[k]!r}" for k in diff[:4])
                raise CheckpointError(
                    f"the diffusers folder {folder} does not match the given config ({shown}"
                    f"{'; unknown keys ' + str(unknown) if unknown else ''}): point the arch config at the right "
                    "folder, or drop `config` to take the folder's config.json as it is"
                )
        files = [folder / w for w in _WEIGHTS if (folder / w).is_file()]
        if not files:
            raise CheckpointError(f"no weights in {folder}: expected one of {', '.join(_WEIGHTS)}")
        config, source = folder_cfg, files[0]
    else:
        if not config:
            raise CheckpointError(
                "family 'diffusers' with a weights file or state dict needs `config` (UNet2DModel kwargs); "
                "or pass the model folder, whose config.json is used"
            )
        source = checkpoint
    # diffusers folders hold one state dict (the EMA models store their EMA as the weights), so ema only filters
    sd = read_checkpoint(source, ema=None if ema else ema)
    converted = convert_state_dict(sd, config)
    with torch.device("meta"):
        backbone = build(config)
    backbone.load_state_dict(converted, strict=True, assign=True)
    return backbone
