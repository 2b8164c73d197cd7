"""Family ``ddpm``: the DDIM / SDEdit ``Model(config)`` (CelebA-HQ, LSUN church/bedroom 256, CIFAR-10 32).

The network is expressed exactly as a diffusers ``UNet2DModel``; ``convert_state_dict`` renames and reshapes the
upstream weights. Config keys are the upstream ones (``ch``, ``ch_mult``, ``attn_resolutions``, ...), flat or as the
nested DDIM yaml (``{"model": {...}, "data": {"image_size": ...}}``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .base import UNet2DBackbone, family_config
from .checkpoints import KeyPlan, Layout, Rule

FAMILY = "ddpm"

# Upstream defaults of the fields the published configs may leave out (the DDIM/SDEdit yaml files set them so).
DEFAULTS = {"in_channels": 3, "out_ch": 3, "dropout": 0.0, "resamp_with_conv": True}
REQUIRED = ("image_size", "ch", "ch_mult", "num_res_blocks", "attn_resolutions")
# Fields of the DDIM yaml's model section that do not change the network.
IGNORED = {"type", "var_type", "ema_rate", "ema", "name"}


def normalize_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Flat upstream config with defaults filled in; accepts the nested DDIM yaml shape."""
    if config is None:
        raise ValueError(f"family {FAMILY!r} needs a config with {', '.join(REQUIRED)}")
    config = dict(config)
    if "model" in config and isinstance(config["model"], Mapping):  # DDIM yaml: model section + data.image_size
        flat = dict(config["model"])
        data = config.get("data") or {}
        if "image_size" in data:
            flat.setdefault("image_size", data["image_size"])
        if "channels" in data:
            flat.setdefault("in_channels", data["channels"])
        config = flat
    cfg = family_config(FAMILY, config, DEFAULTS, REQUIRED, IGNORED)
    cfg["ch_mult"] = [int(m) for m in cfg["ch_mult"]]
    cfg["attn_resolutions"] = [int(r) for r in cfg["attn_resolutions"]]
    for k in ("image_size", "ch", "num_res_blocks", "in_channels", "out_ch"):
        cfg[k] = int(cfg[k])
    cfg["dropout"] = float(cfg["dropout"])
    cfg["resamp_with_conv"] = bool(cfg["resamp_with_conv"])
    return cfg


def unet_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``UNet2DModel`` kwargs that compute exactly what the upstream ``Model`` computes."""
    cfg = normalize_config(config)
    mult = cfg["ch_mult"]
    if mult[0] != 1:
        raise ValueError(
            f"ch_mult[0] = {mult[0]} cannot be expressed exactly by UNet2DModel, which ties the width of conv_in and "
            "of the timestep projection to the first level's width; only ch_mult starting with 1 is supported"
        )
    if not cfg["resamp_with_conv"]:
        raise ValueError(
            "resamp_with_conv=False (average-pool down / plain nearest up) cannot be expressed exactly by "
            "UNet2DModel's Down/UpBlock2D, which always resample with a conv; it is not supported"
        )
    levels = len(mult)
    has_attn = [cfg["image_size"] // 2**i in cfg["attn_resolutions"] for i in range(levels)]
    return dict(
        sample_size=cfg["image_size"],
        in_channels=cfg["in_channels"],
        out_channels=cfg["out_ch"],
        block_out_channels=[cfg["ch"] * m for m in mult],
        layers_per_block=cfg["num_res_blocks"],
        down_block_types=["AttnDownBlock2D" if a else "DownBlock2D" for a in has_attn],
        up_block_types=["AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(has_attn)],
        # trap: sin before cos, frequencies over (half - 1)
        flip_sin_to_cos=False,
        freq_shift=1,
        # trap: pad (0, 1, 0, 1) then a stride-2 conv without padding
        downsample_padding=0,
        downsample_type="conv",
        upsample_type="conv",
        # trap: one head over all channels
        attention_head_dim=None,
        norm_num_groups=32,
        # trap: GroupNorm eps 1e-6 (1e-5 passes an eps-only check but not h)
        norm_eps=1e-6,
        act_fn="silu",
        dropout=cfg["dropout"],
        resnet_time_scale_shift="default",
        mid_block_scale_factor=1,
        center_input_sample=False,
        time_embedding_type="positional",
    )


class DDPMBackbone(UNet2DBackbone):
    family = FAMILY


def build(config: Mapping[str, Any]) -> DDPMBackbone:
    """A randomly initialised backbone for this config (load weights with ``convert_state_dict``)."""
    from diffusers import UNet2DModel

    cfg = normalize_config(config)
    return DDPMBackbone(UNet2DModel(**unet_config(cfg)), cfg, eps_channels=cfg["out_ch"])


# -- key plan -----------------------------------------------------------------------------------------------------
_RESNET = {
    "norm1": "norm1",
    "conv1": "conv1",
    "time_emb_proj": "temb_proj",
    "norm2": "norm2",
    "conv2": "conv2",
    "conv_shortcut": "nin_shortcut",
}
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_TOP = {
    "conv_in": "conv_in",
    "time_embedding.linear_1": "temb.dense.0",
    "time_embedding.linear_2": "temb.dense.1",
    "conv_norm_out": "norm_out",
    "conv_out": "conv_out",
}


def _upstream_name(key: str, levels: int) -> Rule:
    """The upstream source of one ``UNet2DModel`` state-dict key."""
    mod, _, leaf = key.rpartition(".")
    dst = ("unet." + key,)
    if mod in _TOP:
        return Rule(f"{_TOP[mod]}.{leaf}", dst)
    m = re.fullmatch(r"(down|up)_blocks\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)", mod)
    if m:
        side, i, part, j, sub = m.group(1), int(m.group(2)), m.group(3), m.group(4), m.group(5)
        # trap: upstream stores up levels in resolution order, diffusers from the bottleneck out
        level = i if side == "down" else levels - 1 - i
        if part == "resnets":
            return Rule(f"{side}.{level}.block.{j}.{_RESNET[sub]}.{leaf}", dst)
        if part == "attentions":
            return _attn_rule(f"{side}.{level}.attn.{j}.{_ATTN[sub]}.{leaf}", dst, sub, leaf)
        sampler = "downsample" if part == "downsamplers" else "upsample"
        return Rule(f"{side}.{level}.{sampler}.conv.{leaf}", dst)
    m = re.fullmatch(r"mid_block\.(resnets|attentions)\.(\d+)\.(.+)", mod)
    if m:
        part, j, sub = m.groups()
        if part == "resnets":
            return Rule(f"mid.block_{int(j) + 1}.{_RESNET[sub]}.{leaf}", dst)
        return _attn_rule(f"mid.attn_{int(j) + 1}.{_ATTN[sub]}.{leaf}", dst, sub, leaf)
    raise AssertionError(f"no upstream ddpm key for UNet2DModel key {key}")


def _attn_rule(src: str, dst: tuple[str, ...], sub: str, leaf: str) -> Rule:
    # trap: q, k, v, proj_out are 1x1 convs upstream, Linear layers in diffusers
    if sub != "group_norm" and leaf == "weight":
        return Rule(src, dst, "squeeze", singleton_dims=2)
    return Rule(src, dst)


def key_plan(config: Mapping[str, Any]) -> KeyPlan:
    """Upstream key -> backbone key for this config (built on the meta device: no memory, no init cost)."""
    cfg = normalize_config(config)
    from diffusers import UNet2DModel

    with torch.device("meta"):
        unet = UNet2DModel(**unet_config(cfg))
    target = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    levels = len(cfg["ch_mult"])
    rules = [_upstream_name(k, levels) for k in target]
    return KeyPlan(rules, {"unet." + k: s for k, s in target.items()}, FAMILY)


def upstream_layout(config: Mapping[str, Any]) -> Layout:
    """Every key and shape an upstream checkpoint of this config holds."""
    return key_plan(config).upstream_layout()


def convert_state_dict(upstream_sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Upstream ``Model`` weights -> ``DDPMBackbone.state_dict()`` keys (raises CheckpointError on any mismatch)."""
    return key_plan(config).convert(upstream_sd, what=f"{FAMILY} layout")
