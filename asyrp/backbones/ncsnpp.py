"""score_sde's NCSN++ network in its DDPM++ form (VP SDE, discrete timesteps), as a native split backbone.

Why native and not a diffusers ``UNet2DModel``: measured against networks built by the upstream code, no
``UNet2DModel`` configuration computes the same function as these checkpoints. The DDPM++ network
  * divides every residual output -- resblocks *and* attention blocks, at every level -- by sqrt(2) when
    ``skip_rescale`` is set (diffusers applies that factor to the mid block only);
  * gives every up/down-sampling BigGAN resblock a 1x1 shortcut conv, even when its width does not change;
  * places one attention block per decoder level, after the level's last resblock (the encoder has one after every
    resblock at an attention resolution);
  * sizes every GroupNorm as min(C // 4, 32) groups with eps 1e-6.
Patching a built ``UNet2DModel`` to do all of that would not survive ``from_config`` / ``save_pretrained``, so this
file writes the network out directly, with readable parameter names.

Supported configuration space: what the published VP discrete DDPM++ checkpoints use -- ``resblock_type`` "biggan"
or "ddpm", ``fir`` False, ``progressive`` and ``progressive_input`` "none", ``embedding_type`` "positional",
``attention_type`` "ddpm", ``conditional`` True, ``scale_by_sigma`` False, ``skip_rescale`` either way. Anything else
(FIR resampling, progressive growing, Fourier features, the VE output scaling) raises one ``ValueError`` naming the
options. Upstream builds GroupNorm whatever ``normalization`` says, and ignores ``conv_size``; so does this module.

Conventions, checked against the reference fixture and upstream's ``get_score_fn``:
  * input: ``centered`` (upstream ``data.centered``) defaults to True, as the upstream VP configs set it (the generic
    default there is False): x_t is taken as is, in the [-1, 1] data units of the rest of asyrp. The reference
    fixture (no ``centered`` key) follows this; ``centered: False`` maps x to 2x - 1 first and misses it by ~0.4.
  * time: the discrete timestep index 0..999 as a float, straight into the sinusoidal embedding (no rescaling).
  * output: the eps prediction. score_sde turns it into a score by dividing by -sqrt(1 - a_t); we never do.
  * ``Encoding.emb`` is the time embedding after its MLP (Linear, act, Linear), *before* the activation each
    resblock applies to it -- the same tensor the ddpm family exposes, so h-functions condition on the same thing.
  * random init (``build``) uses PyTorch's defaults, not upstream's ``init_scale`` scheme: real weights always come
    from a checkpoint, and random nets only serve tests, where near-zero output convs would hide bugs.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .base import Backbone, Encoding, _as_timesteps

__all__ = ["NCSNppBackbone", "build", "convert_state_dict", "upstream_keys", "upstream_layout"]

_ACTIVATIONS = {"swish": nn.SiLU, "silu": nn.SiLU, "relu": nn.ReLU, "elu": nn.ELU, "lrelu": lambda: nn.LeakyReLU(0.2)}
_REQUIRED = ("nf", "ch_mult", "num_res_blocks", "attn_resolutions", "image_size")
_DEFAULTS: dict[str, Any] = {
    "dropout": 0.1,
    "resamp_with_conv": True,
    "conditional": True,
    "fir": False,
    "skip_rescale": True,
    "resblock_type": "biggan",
    "progressive": "none",
    "progressive_input": "none",
    "embedding_type": "positional",
    "attention_type": "ddpm",
    "nonlinearity": "swish",
    "scale_by_sigma": False,
    "num_channels": 3,
    "centered": True,
}
# option -> (predicate on the value, what is supported)
_SUPPORTED = {
    "fir": (lambda v: not v, "False (no FIR resampling)"),
    "progressive": (lambda v: str(v).lower() == "none", "'none'"),
    "progressive_input": (lambda v: str(v).lower() == "none", "'none'"),
    "embedding_type": (lambda v: str(v).lower() == "positional", "'positional' (VP discrete; 'fourier' is VE)"),
    "resblock_type": (lambda v: str(v).lower() in ("biggan", "ddpm"), "'biggan' or 'ddpm'"),
    "attention_type": (lambda v: str(v).lower() == "ddpm", "'ddpm'"),
    "conditional": (lambda v: bool(v), "True (the h-function needs the time embedding)"),
    "scale_by_sigma": (lambda v: not v, "False (output divided by sigma is the VE parametrisation)"),
    "nonlinearity": (lambda v: str(v).lower() in _ACTIVATIONS, "one of " + ", ".join(_ACTIVATIONS)),
}


def _resolve_config(config: Any) -> dict[str, Any]:
    """Upstream ``config.model`` fields (+ ``image_size``, ``centered``) with defaults filled in and checked."""
    cfg = {**_DEFAULTS, **{str(k): v for k, v in dict(config).items()}}
    missing = [k for k in _REQUIRED if cfg.get(k) is None]
    if missing:
        raise ValueError(
            f"ncsnpp config is missing {missing} (upstream config.model names; image_size is data.image_size)"
        )
    bad = [f"{k}={cfg[k]!r} (supported: {what})" for k, (ok, what) in _SUPPORTED.items() if not ok(cfg[k])]
    if bad:
        raise ValueError(
            "ncsnpp backbone supports the VP discrete DDPM++ configurations only; unsupported option(s): "
            + "; ".join(bad)
        )
    cfg["ch_mult"] = tuple(int(m) for m in cfg["ch_mult"])
    cfg["attn_resolutions"] = tuple(int(r) for r in cfg["attn_resolutions"])
    for k in ("resblock_type", "nonlinearity"):
        cfg[k] = str(cfg[k]).lower()
    return cfg


def _group_norm(channels: int) -> nn.GroupNorm:
    """DDPM++'s normalisation: min(C // 4, 32) groups, eps 1e-6."""
    return nn.GroupNorm(min(channels // 4, 32), channels, eps=1e-6)


def _residual(skip: torch.Tensor, branch: torch.Tensor, rescale: bool) -> torch.Tensor:
    """skip + branch, divided by sqrt(2) under ``skip_rescale`` (keeps the variance of the sum at one)."""
    out = skip + branch
    return out / math.sqrt(2.0) if rescale else out


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of the timestep index: [sin(t w_i), cos(t w_i)], w_i = max_period^(-i / (dim/2 - 1))."""
    half = dim // 2
    freqs = torch.exp(torch.arange(half, dtype=torch.float32, device=t.device) * (-math.log(max_period) / (half - 1)))
    args = t.float()[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    return F.pad(emb, (0, 1)) if dim % 2 else emb


# ---------------------------------------------------------------------------------------------------------------
# building blocks
# ---------------------------------------------------------------------------------------------------------------
class TimeEmbedding(nn.Module):
    """sinusoid(t) -> Linear -> act -> Linear: the embedding every resblock (and the h-function) is conditioned on."""

    def __init__(self, nf: int, act: nn.Module):
        super().__init__()
        self.nf = nf
        self.linear_1 = nn.Linear(nf, 4 * nf)
        self.act = act
        self.linear_2 = nn.Linear(4 * nf, 4 * nf)

    def forward(self, t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(timestep_embedding(t, self.nf).to(dtype))))


class ResBlock(nn.Module):
    """DDPM++ resblock: norm, act, [resample], conv, + temb bias, norm, act, dropout, conv; 1x1 shortcut; / sqrt(2).

    ``biggan`` blocks can resample (nearest-neighbour up or 2x2 mean down, applied to both branches) and have a 1x1
    conv shortcut whenever they resample or change width; ``ddpm`` blocks never resample and use a 1x1 shortcut
    (upstream's NIN) only when the width changes.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        temb_dim: int,
        act: nn.Module,
        *,
        dropout: float,
        skip_rescale: bool,
        up: bool = False,
        down: bool = False,
        kind: str = "biggan",
    ):
        super().__init__()
        self.up, self.down, self.skip_rescale, self.act = up, down, skip_rescale, act
        self.norm1 = _group_norm(in_ch)
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, padding=1)
        self.temb_proj = nn.Linear(temb_dim, out_ch)
        self.norm2 = _group_norm(out_ch)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, padding=1)
        needs_shortcut = in_ch != out_ch or (kind == "biggan" and (up or down))
        self.shortcut = nn.Conv2d(in_ch, out_ch, 1) if needs_shortcut else None

    def _resample(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:
            return F.interpolate(x, scale_factor=2.0, mode="nearest")
        if self.down:
            return F.avg_pool2d(x, 2)
        return x

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.act(self.norm1(x))
        h, x = self._resample(h), self._resample(x)
        h = self.conv1(h) + self.temb_proj(self.act(emb))[:, :, None, None]
        h = self.conv2(self.dropout(self.act(self.norm2(h))))
        if self.shortcut is not None:
            x = self.shortcut(x)
        return _residual(x, h, self.skip_rescale)


class AttnBlock(nn.Module):
    """Single-head self-attention over all pixels; q, k, v and the output projection are per-pixel linear maps.

    ``use_sdpa`` (off by default; ``asyrp.perf.PerfBackbone`` sets it) computes the same attention with
    ``F.scaled_dot_product_attention`` (fused kernels on GPU) instead of the explicit softmax of q^T k.
    """

    def __init__(self, channels: int, *, skip_rescale: bool):
        super().__init__()
        self.skip_rescale = skip_rescale
        self.use_sdpa = False
        self.norm = _group_norm(channels)
        self.to_q = nn.Conv2d(channels, channels, 1)
        self.to_k = nn.Conv2d(channels, channels, 1)
        self.to_v = nn.Conv2d(channels, channels, 1)
        self.proj_out = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        hn = self.norm(x)
        q, k, v = (proj(hn).reshape(B, C, H * W) for proj in (self.to_q, self.to_k, self.to_v))
        if self.use_sdpa:  # (B, 1 head, H*W, C); SDPA's default scale is C ** -0.5, as below
            q, k, v = (z.transpose(1, 2)[:, None] for z in (q, k, v))
            out = F.scaled_dot_product_attention(q, k, v)[:, 0].transpose(1, 2).reshape(B, C, H, W)
        else:
            weights = torch.softmax(torch.einsum("bci,bcj->bij", q, k) * C**-0.5, dim=-1)
            out = torch.einsum("bij,bcj->bci", weights, v).reshape(B, C, H, W)
        return _residual(x, self.proj_out(out), self.skip_rescale)


class Downsample(nn.Module):
    """``ddpm`` resblock type: pad right/bottom by one, then a stride-2 3x3 conv (or a 2x2 mean without conv)."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.pad(x, (0, 1, 0, 1))
        return self.conv(x) if self.conv is not None else F.avg_pool2d(x, 2)


class Upsample(nn.Module):
    """``ddpm`` resblock type: nearest-neighbour 2x, then a 3x3 conv if ``resamp_with_conv``."""

    def __init__(self, channels: int, with_conv: bool):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1) if with_conv else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.conv(x) if self.conv is not None else x


def _resample(block: nn.Module, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
    """A level's up/down step: a resampling resblock (``biggan``, time-conditioned) or a plain Up/Downsample."""
    return block(x, emb) if isinstance(block, ResBlock) else block(x)


class DownLevel(nn.Module):
    """One encoder resolution: ``res[j]``, each followed by ``attn[j]`` at attention resolutions; ``downsample``."""

    def __init__(self, res: list[ResBlock], attn: list[AttnBlock], downsample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = nn.ModuleList(attn)
        self.downsample = downsample


class MidBlock(nn.Module):
    """ResBlock, attention, ResBlock at the lowest resolution: its output is Asyrp's h."""

    def __init__(self, channels: int, make_res, skip_rescale: bool):
        super().__init__()
        self.res1 = make_res(channels, channels)
        self.attn = AttnBlock(channels, skip_rescale=skip_rescale)
        self.res2 = make_res(channels, channels)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.res2(self.attn(self.res1(x, emb)), emb)


class UpLevel(nn.Module):
    """One decoder resolution: ``res[j]`` each on cat(h, skip), one ``attn`` after the last, then ``upsample``."""

    def __init__(self, res: list[ResBlock], attn: AttnBlock | None, upsample: nn.Module | None):
        super().__init__()
        self.res = nn.ModuleList(res)
        self.attn = attn
        self.upsample = upsample


# ---------------------------------------------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------------------------------------------
class NCSNppBackbone(Backbone):
    """DDPM++ (score_sde NCSN++ in its VP discrete form), split at the middle block.

    ``down[i]`` is encoder level i (resolution image_size / 2^i); ``up[k]`` is the k-th decoder level *in execution
    order*, i.e. level L-1-k, deepest first.
    """

    family = "ncsnpp"

    def __init__(self, config: dict[str, Any]):
        cfg = _resolve_config(config)
        super().__init__(cfg, out_channels=int(cfg["num_channels"]), eps_channels=int(cfg["num_channels"]))
        nf, ch_mult, n_res = int(cfg["nf"]), cfg["ch_mult"], int(cfg["num_res_blocks"])
        channels, kind, rescale = int(cfg["num_channels"]), cfg["resblock_type"], bool(cfg["skip_rescale"])
        resolutions = [int(cfg["image_size"]) // 2**i for i in range(len(ch_mult))]
        with_conv = bool(cfg["resamp_with_conv"])
        self.act = _ACTIVATIONS[cfg["nonlinearity"]]()
        self.centered = bool(cfg["centered"])

        def make_res(cin: int, cout: int, **kw) -> ResBlock:
            return ResBlock(
                cin, cout, 4 * nf, self.act, dropout=float(cfg["dropout"]), skip_rescale=rescale, kind=kind, **kw
            )

        def attn_at(level: int) -> bool:
            return resolutions[level] in cfg["attn_resolutions"]

        self.time_embed = TimeEmbedding(nf, self.act)
        self.conv_in = nn.Conv2d(channels, nf, 3, padding=1)

        # encoder: record the width of every skip it will hand to the decoder
        skip_ch, ch = [nf], nf
        self.down = nn.ModuleList()
        for i, mult in enumerate(ch_mult):
            res, attn = [], []
            for _ in range(n_res):
                res.append(make_res(ch, nf * mult))
                ch = nf * mult
                if attn_at(i):
                    attn.append(AttnBlock(ch, skip_rescale=rescale))
                skip_ch.append(ch)
            downsample = None
            if i != len(ch_mult) - 1:
                downsample = make_res(ch, ch, down=True) if kind == "biggan" else Downsample(ch, with_conv)
                skip_ch.append(ch)
            self.down.append(DownLevel(res, attn, downsample))

        self.mid = MidBlock(ch, make_res, rescale)

        # decoder: each level consumes n_res + 1 skips from the end
        self.up = nn.ModuleList()
        for i in reversed(range(len(ch_mult))):
            res = []
            for _ in range(n_res + 1):
                res.append(make_res(ch + skip_ch.pop(), nf * ch_mult[i]))
                ch = nf * ch_mult[i]
            upsample = None
            if i != 0:
                upsample = make_res(ch, ch, up=True) if kind == "biggan" else Upsample(ch, with_conv)
            self.up.append(UpLevel(res, AttnBlock(ch, skip_rescale=rescale) if attn_at(i) else None, upsample))
        assert not skip_ch

        self.norm_out = _group_norm(ch)
        self.conv_out = nn.Conv2d(ch, channels, 3, padding=1)

    @property
    def in_channels(self) -> int:
        return int(self.config["num_channels"])

    def encode(self, x: torch.Tensor, t: torch.Tensor | float | int) -> Encoding:
        # 0. input: the net works on centred data
        if not self.centered:
            x = 2 * x - 1.0
        # 1. time embedding (after its MLP)
        emb = self.time_embed(_as_timesteps(t, x), x.dtype)
        # 2. encoder, every resblock (+attention) output and every downsampled map kept as a skip
        h = self.conv_in(x)
        skips = [h]
        for level in self.down:
            for j, res in enumerate(level.res):
                h = res(h, emb)
                if len(level.attn):
                    h = level.attn[j](h)
                skips.append(h)
            if level.downsample is not None:
                h = _resample(level.downsample, h, emb)
                skips.append(h)
        # 3. middle block: its output is h
        h = self.mid(h, emb)
        return Encoding(h=h, skips=tuple(skips), emb=emb)

    def decode(self, enc: Encoding, h: torch.Tensor | None = None) -> torch.Tensor:
        if h is not None:
            enc = enc.with_h(h)
        sample, skips, emb = enc.h, list(enc.skips), enc.emb
        # 4. decoder: each resblock takes the latest unused skip
        for level in self.up:
            for res in level.res:
                sample = res(torch.cat([sample, skips.pop()], dim=1), emb)
            if level.attn is not None:
                sample = level.attn(sample)
            if level.upsample is not None:
                sample = _resample(level.upsample, sample, emb)
        # 5. output: eps
        return self.conv_out(self.act(self.norm_out(sample)))


def build(config: dict[str, Any]) -> NCSNppBackbone:
    """A randomly initialised DDPM++ backbone (PyTorch default init) for ``config``."""
    return NCSNppBackbone(config)


# ---------------------------------------------------------------------------------------------------------------
# upstream checkpoints
# ---------------------------------------------------------------------------------------------------------------
# upstream parameter names inside one all_modules entry -> ours, in upstream registration order
_RES_PARAMS = (
    ("GroupNorm_0", "norm1"),
    ("Conv_0", "conv1"),
    ("Dense_0", "temb_proj"),
    ("GroupNorm_1", "norm2"),
    ("Conv_1", "conv2"),
)
_ATTN_PARAMS = (("GroupNorm_0", "norm"), ("NIN_0", "to_q"), ("NIN_1", "to_k"), ("NIN_2", "to_v"), ("NIN_3", "proj_out"))


def _all_modules(cfg: dict[str, Any]) -> Iterator[tuple[str, tuple[tuple[str, str], ...]]]:
    """For every entry of upstream's ``all_modules``, in order: (our module path, ((upstream sub, our sub), ...)).

    Subs are parameter-holding children; "" is the module itself (Linear, Conv2d, GroupNorm). Upstream NIN layers
    (attention projections, ``ddpm`` shortcuts) appear with sub names starting with "NIN".
    """
    nf, ch_mult, n_res, kind = int(cfg["nf"]), cfg["ch_mult"], int(cfg["num_res_blocks"]), cfg["resblock_type"]
    resolutions = [int(cfg["image_size"]) // 2**i for i in range(len(ch_mult))]
    biggan, conv_resample = kind == "biggan", bool(cfg["resamp_with_conv"])
    shortcut = ("Conv_2", "shortcut") if biggan else ("NIN_0", "shortcut")

    def res(cin: int, cout: int, resample: bool = False):
        has = cin != cout or (biggan and resample)
        return _RES_PARAMS + ((shortcut,) if has else ())

    def resampler():  # biggan: a resampling resblock; ddpm: Up/Downsample, holding a conv only with resamp_with_conv
        if biggan:
            return res(ch, ch, resample=True)
        return (("Conv_0", "conv"),) if conv_resample else ()

    yield "time_embed.linear_1", (("", ""),)
    yield "time_embed.linear_2", (("", ""),)
    yield "conv_in", (("", ""),)
    skip_ch, ch = [nf], nf
    for i, mult in enumerate(ch_mult):
        for j in range(n_res):
            yield f"down.{i}.res.{j}", res(ch, nf * mult)
            ch = nf * mult
            if resolutions[i] in cfg["attn_resolutions"]:
                yield f"down.{i}.attn.{j}", _ATTN_PARAMS
            skip_ch.append(ch)
        if i != len(ch_mult) - 1:
            yield f"down.{i}.downsample", resampler()
            skip_ch.append(ch)
    yield "mid.res1", res(ch, ch)
    yield "mid.attn", _ATTN_PARAMS
    yield "mid.res2", res(ch, ch)
    for k, i in enumerate(reversed(range(len(ch_mult)))):
        for j in range(n_res + 1):
            cin = ch + skip_ch.pop()
            yield f"up.{k}.res.{j}", res(cin, nf * ch_mult[i])
            ch = nf * ch_mult[i]
        if resolutions[i] in cfg["attn_resolutions"]:
            yield f"up.{k}.attn", _ATTN_PARAMS
        if i != 0:
            yield f"up.{k}.upsample", resampler()
    yield "norm_out", (("", ""),)
    yield "conv_out", (("", ""),)


def _key_map(cfg: dict[str, Any]) -> dict[str, str]:
    """Upstream parameter key -> our key, in upstream ``parameters()`` order (``sigmas`` is a buffer, not included)."""
    out: dict[str, str] = {}
    for idx, (path, subs) in enumerate(_all_modules(cfg)):
        for up_sub, our_sub in subs:
            up_prefix = f"all_modules.{idx}" + (f".{up_sub}" if up_sub else "")
            our_prefix = path + (f".{our_sub}" if our_sub else "")
            nin = up_sub.startswith("NIN")
            names = (("W", "weight"), ("b", "bias")) if nin else (("weight", "weight"), ("bias", "bias"))
            for up_name, our_name in names:
                out[f"{up_prefix}.{up_name}"] = f"{our_prefix}.{our_name}"
    return out


def upstream_layout(config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """The upstream NCSNpp state dict ``config`` expects, key -> shape, in order: ``sigmas``, then every parameter.

    Computed on the meta device (no memory, no init), so checkpoint readers can match a file against a config.
    """
    cfg = _resolve_config(config)
    with torch.device("meta"):
        ours = {k: tuple(v.shape) for k, v in NCSNppBackbone(cfg).state_dict().items()}
    layout: dict[str, tuple[int, ...]] = {"sigmas": (int(cfg.get("num_scales", 1000)),)}
    for up_key, our_key in _key_map(cfg).items():
        shape = ours[our_key]
        layout[up_key] = (shape[1], shape[0]) if up_key.endswith(".W") else shape
    return layout


def upstream_keys(config: dict[str, Any]) -> list[str]:
    """The upstream NCSNpp state-dict keys for ``config``, in order: ``sigmas`` then every parameter."""
    return list(upstream_layout(config))


def convert_state_dict(upstream_sd: dict[str, Any], config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """score_sde NCSNpp weights -> this module's ``state_dict`` keys.

    Accepts the network's state dict (``all_modules.N...`` keys, optionally behind DataParallel's ``module.`` prefix)
    or score_sde's EMA state (``{"decay", "num_updates", "shadow_params": [...]}``, the averaged parameters listed in
    the network's ``parameters()`` order). ``sigmas`` (the VE noise levels, unused by VP) is dropped. Upstream NIN
    weights are stored (in, out) and applied as x @ W; ours are 1x1 convs, so they are transposed.
    """
    cfg = _resolve_config(config)
    key_map = _key_map(cfg)
    if "shadow_params" in upstream_sd:  # score_sde ExponentialMovingAverage.state_dict()
        shadow = list(upstream_sd["shadow_params"])
        if len(shadow) != len(key_map):
            raise ValueError(f"EMA state holds {len(shadow)} parameters, this ncsnpp config has {len(key_map)}")
        upstream_sd = dict(zip(key_map, shadow))
    sd = {k[len("module.") :] if k.startswith("module.") else k: v for k, v in upstream_sd.items()}
    sd.pop("sigmas", None)
    unexpected = sorted(set(sd) - set(key_map))
    missing = [k for k in key_map if k not in sd]
    if unexpected or missing:
        raise ValueError(
            "state dict does not match this ncsnpp config: "
            f"{len(missing)} missing (e.g. {missing[:3]}), {len(unexpected)} unexpected (e.g. {unexpected[:3]})"
        )
    out: dict[str, torch.Tensor] = {}
    for up_key, our_key in key_map.items():
        v = sd[up_key]
        if up_key.endswith(".W"):  # NIN (in, out) -> conv (out, in, 1, 1)
            v = v.t()[:, :, None, None].contiguous()
        out[our_key] = v
    return out
