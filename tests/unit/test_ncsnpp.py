"""ncsnpp backbone (score_sde DDPM++, VP discrete): upstream parity, full-size layout, split, config errors."""

import json
import math
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from asyrp.backbones.base import Encoding
from asyrp.backbones.ncsnpp import (
    NCSNppBackbone,
    _key_map,
    _resolve_config,
    build,
    convert_state_dict,
    upstream_keys,
    upstream_layout,
)
from asyrp.schedules import alphas_cumprod, make_betas

REF = Path(__file__).parents[1] / "fixtures" / "reference_nets"
ARCH = Path(__file__).parents[2] / "conf" / "arch"


@pytest.fixture(scope="module")
def tiny():
    return torch.load(REF / "ncsnpp_tiny.pt", weights_only=True, map_location="cpu")


@pytest.fixture(scope="module")
def layout():
    return json.loads((REF / "checkpoint_layouts.json").read_text())["cifar10_32_ddpmpp_vp_score_sde"]


@pytest.fixture(scope="module")
def net(tiny):
    model = build(tiny["config"])
    model.load_state_dict(convert_state_dict(tiny["state_dict"], tiny["config"]), strict=True)
    return model.freeze()


# -- parity with the upstream network ---------------------------------------------------------------------------
def test_fixture_parity_eps_and_h(net, tiny):
    with torch.no_grad():
        enc = net.encode(tiny["x"], tiny["t"])
        out = net.decode(enc)
    assert out.shape == tiny["eps"].shape and net.eps(out).shape[1] == 3
    assert (out - tiny["eps"]).abs().max().item() < 1e-4
    assert (enc.h - tiny["h"]).abs().max().item() < 1e-4
    assert net.h_shape == tuple(tiny["h"].shape[1:]) and net.emb_dim == 4 * tiny["config"]["nf"]


def test_fixture_is_centred_data(tiny):
    """The fixture's config has no `centered`; the default (True, as every upstream VP config) must reproduce it."""
    cfg = {**tiny["config"], "centered": False}
    model = build(cfg)
    model.load_state_dict(convert_state_dict(tiny["state_dict"], cfg), strict=True)
    with torch.no_grad():
        assert (model.freeze()(tiny["x"], tiny["t"]) - tiny["eps"]).abs().max().item() > 1e-2


def test_strict_keys_and_upstream_key_order(tiny):
    assert upstream_layout(tiny["config"]) == {k: tuple(v.shape) for k, v in tiny["state_dict"].items()}
    model = build(tiny["config"])
    result = model.load_state_dict(convert_state_dict(tiny["state_dict"], tiny["config"]), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    names = set(model.state_dict())
    for readable in (
        "time_embed.linear_1.weight",
        "conv_in.weight",
        "down.1.attn.0.to_q.weight",
        "down.0.downsample.shortcut.weight",
        "mid.res1.conv1.weight",
        "mid.attn.proj_out.weight",
        "mid.res2.temb_proj.weight",
        "up.1.attn.norm.weight",
        "up.0.upsample.shortcut.weight",
        "norm_out.weight",
        "conv_out.weight",
    ):
        assert readable in names


def test_nin_weights_are_transposed(tiny):
    sd = convert_state_dict(tiny["state_dict"], tiny["config"])
    W = tiny["state_dict"]["all_modules.10.NIN_0.W"]  # mid attention query, stored (in, out)
    assert torch.equal(sd["mid.attn.to_q.weight"][:, :, 0, 0], W.t())


def test_dataparallel_prefix_and_ema_shadow_params(tiny):
    plain = convert_state_dict(tiny["state_dict"], tiny["config"])
    prefixed = convert_state_dict({"module." + k: v for k, v in tiny["state_dict"].items()}, tiny["config"])
    params = [v for k, v in tiny["state_dict"].items() if k != "sigmas"]  # parameters() order
    ema = convert_state_dict({"decay": 0.9999, "num_updates": 1, "shadow_params": params}, tiny["config"])
    for other in (prefixed, ema):
        assert other.keys() == plain.keys() and all(torch.equal(other[k], plain[k]) for k in plain)


def test_mismatched_state_dict_is_refused(tiny):
    sd = dict(tiny["state_dict"])
    sd.pop("all_modules.6.NIN_3.b")
    with pytest.raises(ValueError, match="missing"):
        convert_state_dict(sd, tiny["config"])
    with pytest.raises(ValueError, match="unexpected"):
        convert_state_dict({**tiny["state_dict"], "all_modules.99.weight": torch.zeros(1)}, tiny["config"])


# -- the published full-size layout -----------------------------------------------------------------------------
def test_full_size_layout_maps_one_to_one(layout):
    cfg = {**layout["config"], "image_size": 32}
    keys = [k for k, _ in layout["keys"]]
    assert upstream_keys(cfg) == keys  # same names, same order (the EMA shadow_params order relies on it)
    assert upstream_layout(cfg) == {k: tuple(s) for k, s in layout["keys"]}
    with torch.device("meta"):
        model = build(cfg)
        fake = {k: torch.empty(shape) for k, shape in layout["keys"]}
    converted = convert_state_dict(fake, cfg)
    ours = model.state_dict()
    assert converted.keys() == ours.keys()
    assert all(converted[k].shape == ours[k].shape for k in ours)
    assert len(converted) == len(keys) - 1  # every key but the `sigmas` buffer
    n_params = sum(p.numel() for p in model.parameters())
    sigmas = math.prod(dict(layout["keys"])["sigmas"])
    assert n_params == layout["n_params"] == sum(math.prod(s) for _, s in layout["keys"]) - sigmas


def test_arch_yamls(tiny, layout):
    published = OmegaConf.load(ARCH / "cifar10_ddpmpp.yaml")
    assert published.family == "ncsnpp" and published.beta_schedule == "linear"
    assert str(published.checkpoint).endswith("cifar10_ddpmpp_vp/checkpoint_26.pth")
    with torch.device("meta"):
        model = build(OmegaConf.to_container(published.config))
    cfg = {**layout["config"], "image_size": 32}
    fake = {k: torch.empty(shape, device="meta") for k, shape in layout["keys"]}
    assert model.state_dict().keys() == convert_state_dict(fake, cfg).keys()

    small = OmegaConf.load(ARCH / "tiny_ncsnpp.yaml")
    assert small.family == "ncsnpp" and small.checkpoint is None and small.beta_schedule == "linear"
    model = build(small.config)
    model.load_state_dict(convert_state_dict(tiny["state_dict"], small.config), strict=True)
    with torch.no_grad():
        assert (model.freeze()(tiny["x"], tiny["t"]) - tiny["eps"]).abs().max().item() < 1e-4


def test_vp_discrete_betas_are_the_linear_schedule(tiny):
    """score_sde's VPSDE: betas = linspace(beta_min / N, beta_max / N, N), i.e. DDPM's linear 1e-4..0.02."""
    N, cfg = 1000, tiny["config"]
    vp = torch.linspace(cfg["beta_min"] / N, cfg["beta_max"] / N, N, dtype=torch.float64)
    assert torch.allclose(vp, make_betas("linear"), rtol=0, atol=1e-15)
    assert torch.allclose(alphas_cumprod(vp), alphas_cumprod(make_betas("linear")), rtol=0, atol=1e-12)


# -- the split --------------------------------------------------------------------------------------------------
def test_decode_of_encode_is_forward(net, tiny):
    with torch.no_grad():
        assert torch.equal(net.decode(net.encode(tiny["x"], tiny["t"])), net(tiny["x"], tiny["t"]))


def test_decoding_twice_is_safe(net, tiny):
    with torch.no_grad():
        enc = net.encode(tiny["x"], tiny["t"])
        saved = Encoding(enc.h.clone(), tuple(s.clone() for s in enc.skips), enc.emb.clone())
        first, second = net.decode(enc), net.decode(enc)
    assert torch.equal(first, second)
    assert torch.equal(enc.h, saved.h) and torch.equal(enc.emb, saved.emb)
    assert all(torch.equal(a, b) for a, b in zip(enc.skips, saved.skips))


def test_batched_decode_equals_separate_decodes(net, tiny):
    B = tiny["x"].shape[0]
    with torch.no_grad():
        enc = net.encode(tiny["x"], tiny["t"])
        delta = torch.randn(enc.h.shape, generator=torch.Generator().manual_seed(0))
        both = net.decode(enc, torch.cat([enc.h, enc.h + delta]))
        plain, edited = net.decode(enc), net.decode(enc, enc.h + delta)
    assert both.shape[0] == 2 * B
    assert torch.allclose(both[:B], plain, rtol=0, atol=1e-5)
    assert torch.allclose(both[B:], edited, rtol=0, atol=1e-5)
    assert (edited - plain).abs().max() > 1e-2  # the edit reaches the output
    with pytest.raises(ValueError):
        net.decode(enc, enc.h[:, :-1])


def test_scalar_and_integer_timesteps(net, tiny):
    x = tiny["x"][:1]
    with torch.no_grad():
        ref = net(x, torch.tensor([3.0]))
        assert torch.equal(net(x, 3), ref) and torch.equal(net(x, 3.0), ref)


@pytest.mark.parametrize("kind,resamp_with_conv,skip_rescale", [("ddpm", True, False), ("ddpm", False, True)])
def test_ddpm_resblock_type_round_trip(kind, resamp_with_conv, skip_rescale, tiny):
    """No upstream fixture for resblock_type 'ddpm': check converter and module agree (keys, shapes, NIN transpose)."""
    cfg = {**tiny["config"], "resblock_type": kind, "resamp_with_conv": resamp_with_conv, "skip_rescale": skip_rescale}
    torch.manual_seed(0)
    src = build(cfg).freeze()
    ours = src.state_dict()
    upstream = {"sigmas": torch.zeros(1000)}
    for up_key, our_key in _key_map(_resolve_config(cfg)).items():
        v = ours[our_key]
        upstream[up_key] = v[:, :, 0, 0].t().contiguous() if up_key.endswith(".W") else v.clone()
    assert any(k.endswith(".NIN_0.W") for k in upstream)  # ddpm resblocks that change width use a NIN shortcut
    assert any(k.endswith("downsample.conv.weight") for k in ours) == resamp_with_conv
    dst = build(cfg)
    dst.load_state_dict(convert_state_dict(upstream, cfg), strict=True)
    with torch.no_grad():
        assert torch.equal(dst.freeze()(tiny["x"], tiny["t"]), src(tiny["x"], tiny["t"]))
    assert not any("downsample.shortcut" in k or "upsample.shortcut" in k for k in ours)


# -- configuration space ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "option,value",
    [
        ("fir", True),
        ("progressive", "output_skip"),
        ("progressive_input", "residual"),
        ("embedding_type", "fourier"),
        ("scale_by_sigma", True),
        ("resblock_type", "unet"),
        ("conditional", False),
        ("attention_type", "legacy"),
    ],
)
def test_unsupported_options_raise(option, value, tiny):
    with pytest.raises(ValueError, match=rf"{option}=.*supported"):
        build({**tiny["config"], option: value})
    with pytest.raises(ValueError, match=option):
        convert_state_dict(tiny["state_dict"], {**tiny["config"], option: value})


def test_missing_image_size_raises(tiny):
    cfg = {k: v for k, v in tiny["config"].items() if k != "image_size"}
    with pytest.raises(ValueError, match="image_size"):
        NCSNppBackbone(cfg)


def test_load_backbone_score_sde_container(tiny):
    """Through the public loader: a score_sde checkpoint holds DataParallel-prefixed raw weights and an EMA list."""
    from asyrp.backbones import load_backbone

    raw = {"module." + k: torch.zeros_like(v) for k, v in tiny["state_dict"].items()}  # raw != EMA on purpose
    shadow = [v for k, v in tiny["state_dict"].items() if k != "sigmas"]
    ckpt = {"model": raw, "ema": {"decay": 0.9999, "num_updates": 1, "shadow_params": shadow}, "step": 1}
    net = load_backbone("ncsnpp", tiny["config"], ckpt)
    assert isinstance(net, NCSNppBackbone) and not any(p.requires_grad for p in net.parameters())
    with torch.no_grad():
        assert (net(tiny["x"], tiny["t"]) - tiny["eps"]).abs().max().item() < 1e-4
