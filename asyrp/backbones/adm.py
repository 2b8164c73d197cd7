"""Family ``adm``: the guided-diffusion / improved-diffusion ``UNetModel`` (iDDPM / ADM: AFHQ-dog, P2 FFHQ /
MetFaces / CelebA-HQ, ImageNet-256 unconditional).

The config is the keyword arguments of upstream ``create_model(**config)``; the network is expressed exactly as a
diffusers ``UNet2DModel`` plus a per-layer attention head count (see ``_set_heads``), and ``convert_state_dict``
renames and reshapes the upstream weights.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from .base import UNet2DBackbone, family_config
from .checkpoints import KeyPlan, Layout, Rule

FAMILY = "adm"
NUM_CLASSES = 1000  # class-conditional ADM models are ImageNet models

# create_model's own keyword defaults (not the training script's defaults).
DEFAULTS: dict[str, Any] = {
    "channel_mult": "",
    "learn_sigma": False,
    "class_cond": False,
    "use_checkpoint": False,
    "attention_resolutions": "16",
    "num_heads": 1,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "use_scale_shift_norm": False,
    "dropout": 0.0,
    "resblock_updown": False,
    "use_fp16": False,
    "use_new_attention_order": False,
}
REQUIRED = ("image_size", "num_channels", "num_res_blocks")
# Diffusion-process arguments that travel with the model arguments in upstream scripts; they do not shape the net.
IGNORED = {
    "diffusion_steps",
    "noise_schedule",
    "timestep_respacing",
    "use_kl",
    "predict_xstart",
    "rescale_timesteps",
    "rescale_learned_sigmas",
    "sigma_small",
    "name",
}

# channel_mult="" derives the widths from the image size (guided-diffusion; 32 px as improved-diffusion's CIFAR model).
_MULT_BY_SIZE = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
    32: (1, 2, 2, 2),
}


def _ints(value: Any) -> list:
    """ "1,2,2" / [1, 2, 2] / (16,) / 16 -> a list of numbers."""
    if isinstance(value, str):
        return [float(v) if "." in v else int(v) for v in value.split(",") if v.strip()]
    if isinstance(value, (int, float)):
        return [value]
    return [int(v) if float(v).is_integer() else float(v) for v in value]


def normalize_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """create_model's arguments with defaults filled in, ``channel_mult`` derived and both lists parsed.

    ``channel_mult`` becomes the list of level multipliers and ``attention_resolutions`` the list of resolutions
    (upstream turns them into downsample rates image_size // r; ``attention_rates`` holds those). Idempotent.
    """
    if config is None:
        raise ValueError(f"family {FAMILY!r} needs a config with {', '.join(REQUIRED)} (create_model's arguments)")
    config = dict(config)
    config.pop("attention_rates", None)
    cfg = family_config(FAMILY, config, DEFAULTS, REQUIRED, IGNORED)
    for k in ("image_size", "num_channels", "num_res_blocks", "num_heads", "num_head_channels", "num_heads_upsample"):
        cfg[k] = int(cfg[k])
    for k in (
        "learn_sigma",
        "class_cond",
        "use_checkpoint",
        "use_scale_shift_norm",
        "resblock_updown",
        "use_fp16",
        "use_new_attention_order",
    ):
        cfg[k] = bool(cfg[k])
    cfg["dropout"] = float(cfg["dropout"])
    size = cfg["image_size"]
    if cfg["channel_mult"] in ("", None, []):
        if size not in _MULT_BY_SIZE:
            raise ValueError(f"channel_mult='' has no upstream default for image_size {size}: give channel_mult")
        cfg["channel_mult"] = list(_MULT_BY_SIZE[size])
    else:
        cfg["channel_mult"] = _ints(cfg["channel_mult"])
    cfg["attention_resolutions"] = [int(r) for r in _ints(cfg["attention_resolutions"])]
    cfg["attention_rates"] = [size // r for r in cfg["attention_resolutions"]]
    return cfg


def attention_heads(cfg: Mapping[str, Any], channels: int, upsampling: bool) -> int:
    """The head count upstream gives an attention layer of ``channels`` channels.

    A fixed head width (num_head_channels) wins; otherwise the fixed head count, num_heads_upsample on the
    decoder side (trap: improved-diffusion-style models have a different head width at every level).
    """
    if cfg["num_head_channels"] != -1:
        if channels % cfg["num_head_channels"]:
            raise ValueError(f"{channels} channels are not divisible by num_head_channels={cfg['num_head_channels']}")
        return channels // cfg["num_head_channels"]
    if upsampling and cfg["num_heads_upsample"] != -1:
        return cfg["num_heads_upsample"]
    return cfg["num_heads"]


def _levels_with_attention(cfg: Mapping[str, Any]) -> list[bool]:
    return [2**i in cfg["attention_rates"] for i in range(len(cfg["channel_mult"]))]


def unet_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``UNet2DModel`` kwargs that compute exactly what upstream ``UNetModel`` computes (heads aside, see build)."""
    cfg = normalize_config(config)
    mult = cfg["channel_mult"]
    if mult[0] != 1 or any(not float(m).is_integer() for m in mult):
        raise ValueError(
            f"channel_mult={mult} cannot be expressed exactly by UNet2DModel: it ties the width of the input conv "
            "and of the timestep projection to the first level (needs channel_mult[0] == 1 and whole multipliers); "
            "this configuration is not supported"
        )
    attn = _levels_with_attention(cfg)
    updown = cfg["resblock_updown"]
    plain_down, plain_up = (
        ("ResnetDownsampleBlock2D", "ResnetUpsampleBlock2D") if updown else ("DownBlock2D", "UpBlock2D")
    )
    return dict(
        sample_size=cfg["image_size"],
        in_channels=3,
        out_channels=6 if cfg["learn_sigma"] else 3,
        block_out_channels=[cfg["num_channels"] * int(m) for m in mult],
        layers_per_block=cfg["num_res_blocks"],
        down_block_types=["AttnDownBlock2D" if a else plain_down for a in attn],
        up_block_types=["AttnUpBlock2D" if a else plain_up for a in reversed(attn)],
        # trap: resblock_updown=False means strided-conv down / nearest+conv up sampling
        downsample_type="resnet" if updown else "conv",
        upsample_type="resnet" if updown else "conv",
        downsample_padding=1,
        # trap: cos before sin, frequencies over half
        flip_sin_to_cos=True,
        freq_shift=0,
        attention_head_dim=cfg["num_head_channels"] if cfg["num_head_channels"] != -1 else None,
        norm_num_groups=32,
        # trap: without it the scale-shift mid-block attention has no GroupNorm
        attn_norm_num_groups=32,
        norm_eps=1e-5,
        act_fn="silu",
        dropout=cfg["dropout"],
        resnet_time_scale_shift="scale_shift" if cfg["use_scale_shift_norm"] else "default",
        num_class_embeds=NUM_CLASSES if cfg["class_cond"] else None,
        mid_block_scale_factor=1,
        center_input_sample=False,
        time_embedding_type="positional",
    )


def _attention_layers(unet) -> list[tuple[Any, int, bool]]:
    """(attention module, channels, on the decoder side) for every attention layer."""
    out = []
    for blk in unet.down_blocks:
        out += [(a, a.inner_dim, False) for a in getattr(blk, "attentions", [])]
    out += [(a, a.inner_dim, False) for a in unet.mid_block.attentions]
    for blk in unet.up_blocks:
        out += [(a, a.inner_dim, True) for a in getattr(blk, "attentions", [])]
    return out


def _set_heads(unet, cfg: Mapping[str, Any]) -> None:
    """Give every attention layer its upstream head count (UNet2DModel's config holds a single head width).

    Kept on the built modules; ``unet.save_pretrained`` would not record it, so always build through ``build``.
    """
    for attn, channels, up in _attention_layers(unet):
        heads = attention_heads(cfg, channels, up)
        attn.heads = heads
        attn.sliceable_head_dim = heads
        attn.scale = (channels // heads) ** -0.5


class ADMBackbone(UNet2DBackbone):
    family = FAMILY


def build(config: Mapping[str, Any]) -> ADMBackbone:
    """A randomly initialised backbone for this config (``learn_sigma``: 6 output channels, eps is the first 3)."""
    from diffusers import UNet2DModel

    cfg = normalize_config(config)
    unet = UNet2DModel(**unet_config(cfg))
    _set_heads(unet, cfg)
    return ADMBackbone(unet, cfg, eps_channels=3)


# -- key plan -----------------------------------------------------------------------------------------------------
_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "time_emb_proj": "emb_layers.1",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "conv_shortcut": "skip_connection",
}
_TOP = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "class_embedding": "label_emb",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}


def _rules(target: Mapping[str, tuple[int, ...]], cfg: Mapping[str, Any]) -> list[Rule]:
    n = cfg["num_res_blocks"] + 1  # upstream blocks per level: the resblocks plus one resampler
    attn = _levels_with_attention(cfg)
    levels = len(attn)
    mult = cfg["channel_mult"]
    rules: list[Rule] = []
    for key in target:
        mod, _, leaf = key.rpartition(".")
        dst = ("unet." + key,)
        if mod in _TOP:
            rules.append(Rule(f"{_TOP[mod]}.{leaf}", dst))
            continue
        m = re.fullmatch(
            r"(down_blocks|up_blocks|mid_block)\.(?:(\d+)\.)?(resnets|attentions|downsamplers|upsamplers)\.(\d+)\.(.+)",
            mod,
        )
        if m is None:
            raise AssertionError(f"no upstream adm key for UNet2DModel key {key}")
        where, i, part, j, sub = m.group(1), int(m.group(2) or 0), m.group(3), int(m.group(4)), m.group(5)
        if where == "down_blocks":
            level, up = i, False
            block = 1 + i * n + (j if part != "downsamplers" else n - 1)
            pos = 1 if part == "attentions" else 0
            prefix = f"input_blocks.{block}.{pos}"
        elif where == "up_blocks":
            level, up = levels - 1 - i, True
            block = i * n + (j if part != "upsamplers" else n - 1)
            # the resampler follows the last resblock (and its attention, if the level has one) in the same block
            pos = 1 if part == "attentions" else (2 if attn[level] else 1) if part == "upsamplers" else 0
            prefix = f"output_blocks.{block}.{pos}"
        else:
            level, up = levels - 1, False
            prefix = f"middle_block.{1 if part == 'attentions' else 2 * j}"
        if part in ("downsamplers", "upsamplers") and sub == "conv":
            rules.append(Rule(f"{prefix}.{'op' if part == 'downsamplers' else 'conv'}.{leaf}", dst))
        elif part != "attentions":
            rules.append(Rule(f"{prefix}.{_RESNET[sub]}.{leaf}", dst))
        elif sub == "group_norm":
            rules.append(Rule(f"{prefix}.norm.{leaf}", dst))
        elif sub == "to_out.0":  # 1-d conv upstream, Linear in diffusers
            rules.append(
                Rule(
                    f"{prefix}.proj_out.{leaf}",
                    dst,
                    "squeeze" if leaf == "weight" else "copy",
                    singleton_dims=1 if leaf == "weight" else 0,
                )
            )
        elif sub == "to_q":
            qkv = tuple(f"unet.{mod[: -len('to_q')]}{p}.{leaf}" for p in ("to_q", "to_k", "to_v"))
            channels = cfg["num_channels"] * int(mult[level])
            # trap: legacy attention interleaves q, k, v per head; the new order stores three plain blocks
            heads = 0 if cfg["use_new_attention_order"] else attention_heads(cfg, channels, up)
            rules.append(
                Rule(f"{prefix}.qkv.{leaf}", qkv, "qkv", singleton_dims=1 if leaf == "weight" else 0, heads=heads)
            )
        # to_k / to_v are covered by the to_q rule
    return rules


def key_plan(config: Mapping[str, Any]) -> KeyPlan:
    """Upstream key -> backbone key for this config (built on the meta device: no memory, no init cost)."""
    cfg = normalize_config(config)
    from diffusers import UNet2DModel

    with torch.device("meta"):
        unet = UNet2DModel(**unet_config(cfg))
    target = {k: tuple(v.shape) for k, v in unet.state_dict().items()}
    return KeyPlan(_rules(target, cfg), {"unet." + k: s for k, s in target.items()}, FAMILY)


def upstream_layout(config: Mapping[str, Any]) -> Layout:
    """Every key and shape an upstream checkpoint of this config holds."""
    return key_plan(config).upstream_layout()


def convert_state_dict(upstream_sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """Upstream ``UNetModel`` weights -> ``ADMBackbone.state_dict()`` keys (raises CheckpointError on any mismatch)."""
    return key_plan(config).convert(upstream_sd, what=f"{FAMILY} layout")
