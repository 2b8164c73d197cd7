"""Backbones of the ddpm / adm / diffusers families: parity with the upstream code, full-size layouts, the h-space split."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from asyrp.backbones import Backbone, Encoding, UNet2DBackbone, adm, ddpm, load_backbone
from asyrp.backbones.checkpoints import layout_of

REFERENCE_NETS = Path(__file__).parents[1] / "fixtures" / "reference_nets"

TOL = 1e-4
LAYOUTS = json.loads((REFERENCE_NETS / "checkpoint_layouts.json").read_text())
MY_LAYOUTS = {k: v for k, v in LAYOUTS.items() if v["family"] in ("ddpm", "adm")}
MODULES = {"ddpm": ddpm, "adm": adm}


@pytest.fixture(scope="module", params=["ddpm", "adm"])
def ref(request):
    d = torch.load(REFERENCE_NETS / f"{request.param}_tiny.pt", weights_only=True)
    return request.param, d


def _max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# -- parity with the upstream networks ----------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["fixture_file", "memory"])
def test_parity_with_upstream(ref, source):
    """Through load_backbone(family, config, checkpoint): the fixture file itself (a dict whose "state_dict" entry
    holds the weights) or the in-memory state dict."""
    family, d = ref
    checkpoint = REFERENCE_NETS / f"{family}_tiny.pt" if source == "fixture_file" else d["state_dict"]
    net = load_backbone(family, d["config"], checkpoint)
    with torch.no_grad():
        enc = net.encode(d["x"], d["t"])
        out = net.decode(enc)
    assert _max_err(out, d["eps"]) < TOL  # every output channel (6 for learned-sigma ADM)
    assert _max_err(enc.h, d["h"]) < TOL


def test_parity_from_release_file(ref, tmp_path):
    """As a published file: a bare state dict on disk, read through load_backbone(family, config, path)."""
    family, d = ref
    path = tmp_path / f"{family}.pt"
    torch.save(d["state_dict"], path)
    net = load_backbone(family, d["config"], path)
    with torch.no_grad():
        enc = net.encode(d["x"], d["t"])
        assert _max_err(net.decode(enc), d["eps"]) < TOL
        assert _max_err(enc.h, d["h"]) < TOL
        assert _max_err(net(d["x"], d["t"]), d["eps"]) < TOL


def test_conversion_is_strict_and_complete(ref):
    family, d = ref
    module = MODULES[family]
    converted = module.convert_state_dict(d["state_dict"], d["config"])
    own = module.build(d["config"]).state_dict()
    assert layout_of(converted) == layout_of(own)
    # every upstream tensor is used: the parameter count is preserved
    assert sum(v.numel() for v in converted.values()) == sum(v.numel() for v in d["state_dict"].values())


def test_backbone_properties(ref):
    family, d = ref
    net = load_backbone(family, d["config"], d["state_dict"])
    assert net.family == family and isinstance(net, UNet2DBackbone)
    assert net.eps_channels == 3
    assert net.out_channels == d["eps"].shape[1] == (6 if family == "adm" else 3)
    assert net.h_shape == tuple(d["h"].shape[1:]) == (64, 8, 8)
    assert net.h_channels == 64
    assert net.emb_dim == 4 * 32  # 4 x the base width: the time-embedding MLP output
    assert net.image_size == 32
    out = torch.randn(2, net.out_channels, 4, 4)
    assert torch.equal(net.eps(out), out[:, :3])


def test_frozen(ref):
    family, d = ref
    net = load_backbone(family, d["config"], d["state_dict"])
    assert not any(p.requires_grad for p in net.parameters())
    net.train()
    assert not net.training


# -- full-size published layouts (meta device: no memory, no init) ------------------------------------------------
@pytest.mark.parametrize("name", sorted(MY_LAYOUTS))
def test_full_size_layout(name):
    entry = MY_LAYOUTS[name]
    module = MODULES[entry["family"]]
    expected = {k: tuple(s) for k, s in entry["keys"]}
    assert module.upstream_layout(entry["config"]) == expected
    # a checkpoint with exactly that layout converts to exactly the backbone's own keys and shapes
    fake = {k: torch.empty(s, device="meta") for k, s in expected.items()}
    converted = module.convert_state_dict(fake, entry["config"])
    with torch.device("meta"):
        net = module.build(entry["config"])
    assert layout_of(converted) == layout_of(net.state_dict())
    assert sum(p.numel() for p in net.parameters()) == entry["n_params"]
    net.load_state_dict(converted, strict=True, assign=True)


def test_ddim_yaml_nested_config():
    flat = MY_LAYOUTS["celeba_hq_256_sdedit"]["config"]
    nested = {
        "data": {"image_size": 256, "channels": 3},
        "model": {k: v for k, v in flat.items() if k != "image_size"} | {"type": "simple", "ema": True},
    }
    assert ddpm.upstream_layout(nested) == ddpm.upstream_layout(flat)


# -- configurations the UNet2DModel cannot express raise, never approximate --------------------------------------
def test_adm_channel_mult_not_starting_at_one_raises():
    with pytest.raises(ValueError, match="cannot be expressed exactly"):
        adm.build({"image_size": 512, "num_channels": 32, "num_res_blocks": 1, "channel_mult": ""})


def test_ddpm_unsupported_options_raise():
    base = {"image_size": 32, "ch": 32, "ch_mult": [1, 2], "num_res_blocks": 1, "attn_resolutions": [16]}
    with pytest.raises(ValueError, match="resamp_with_conv"):
        ddpm.build({**base, "resamp_with_conv": False})
    with pytest.raises(ValueError, match="ch_mult"):
        ddpm.build({**base, "ch_mult": [2, 2]})
    with pytest.raises(ValueError, match="unknown ddpm config keys"):
        ddpm.build({**base, "chmult": [1, 2]})


def test_adm_channel_mult_derived_from_image_size():
    cfg = adm.normalize_config(
        {"image_size": 256, "num_channels": 8, "num_res_blocks": 1, "attention_resolutions": "32,16,8"}
    )
    assert cfg["channel_mult"] == [1, 1, 2, 2, 4, 4]
    assert cfg["attention_rates"] == [8, 16, 32]
    assert adm.normalize_config(cfg) == cfg  # idempotent


# -- ADM attention heads: checked against a hand-written legacy / new-order attention ------------------------------
def _upstream_attention(x, sd, prefix, heads, legacy):
    """The upstream attention block written out: GroupNorm -> fused qkv -> per-head softmax attention -> proj."""
    B, C, H, W = x.shape
    h = F.group_norm(x, 32, sd[prefix + "norm.weight"], sd[prefix + "norm.bias"], eps=1e-5).reshape(B, C, H * W)
    qkv = F.conv1d(h, sd[prefix + "qkv.weight"], sd[prefix + "qkv.bias"])
    d = C // heads
    if legacy:
        q, k, v = qkv.reshape(B * heads, 3 * d, H * W).split(d, dim=1)
    else:
        q, k, v = (t.reshape(B * heads, d, H * W) for t in qkv.chunk(3, dim=1))
    w = torch.softmax(torch.einsum("bct,bcs->bts", q, k) / math.sqrt(d), dim=-1)
    a = torch.einsum("bts,bcs->bct", w, v).reshape(B, C, H * W)
    return x + F.conv1d(a, sd[prefix + "proj_out.weight"], sd[prefix + "proj_out.bias"]).reshape(B, C, H, W)


@pytest.mark.parametrize("legacy", [True, False])
def test_adm_fixed_head_count_per_layer(legacy):
    """improved-diffusion style: a fixed num_heads (and num_heads_upsample on the decoder side), no head width."""
    cfg = {
        "image_size": 32,
        "num_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": "1,2,2",
        "attention_resolutions": "16,8",
        "num_heads": 4,
        "num_head_channels": -1,
        "num_heads_upsample": 2,
        "use_new_attention_order": not legacy,
    }
    torch.manual_seed(0)
    sd = {k: torch.randn(s) * 0.2 for k, s in adm.upstream_layout(cfg).items()}
    net = load_backbone("adm", cfg, sd)
    x = torch.randn(2, 64, 8, 8)
    with torch.no_grad():
        mid = net.unet.mid_block.attentions[0]
        up = net.unet.up_blocks[1].attentions[1]  # level 1 (16 px), 64 channels, decoder side: output_blocks.3
        assert (mid.heads, up.heads) == (4, 2)
        assert _max_err(mid(x), _upstream_attention(x, sd, "middle_block.1.", 4, legacy)) < 1e-5
        assert _max_err(up(x), _upstream_attention(x, sd, "output_blocks.3.1.", 2, legacy)) < 1e-5
        # the wrong head count gives a visibly different answer, so the check above can fail
        assert _max_err(mid(x), _upstream_attention(x, sd, "middle_block.1.", 2, legacy)) > 1e-3


def test_adm_class_conditional():
    cfg = {
        "image_size": 32,
        "num_channels": 32,
        "num_res_blocks": 1,
        "channel_mult": "1,2",
        "class_cond": True,
        "attention_resolutions": "16",
        "num_head_channels": 32,
    }
    layout = adm.upstream_layout(cfg)
    assert layout["label_emb.weight"] == (adm.NUM_CLASSES, 128)
    sd = {k: torch.randn(s) * 0.1 for k, s in layout.items()}
    net = load_backbone("adm", cfg, sd)
    assert torch.equal(net.unet.class_embedding.weight, sd["label_emb.weight"])
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        a = net.decode(net.encode(x, 10, class_labels=torch.tensor([1, 2])))
        b = net.decode(net.encode(x, 10, class_labels=torch.tensor([3, 4])))
    assert _max_err(a, b) > 1e-4


# -- the h-space split ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def nets():
    out = {}
    for family in ("ddpm", "adm"):
        d = torch.load(REFERENCE_NETS / f"{family}_tiny.pt", weights_only=True)
        out[family] = (load_backbone(family, d["config"], d["state_dict"]), d)
    return out


@pytest.mark.parametrize("family", ["ddpm", "adm"])
def test_split_equals_unet_forward(nets, family):
    net, d = nets[family]
    with torch.no_grad():
        split = net.decode(net.encode(d["x"], d["t"]))
        whole = net.unet(d["x"], d["t"]).sample
    assert torch.equal(split, whole)


@pytest.mark.parametrize("family", ["ddpm", "adm"])
def test_decode_twice_and_h_replacement(nets, family):
    net, d = nets[family]
    with torch.no_grad():
        enc = net.encode(d["x"], d["t"])
        assert (
            isinstance(enc, Encoding) and len(enc.skips) == 1 + 2 * 2 + 1
        )  # conv_in + (resnet, sampler) x 2 + last resnet
        kept = [enc.h.clone(), *(s.clone() for s in enc.skips), enc.emb.clone()]
        first = net.decode(enc)
        second = net.decode(enc)
        assert torch.equal(first, second)
        assert all(torch.equal(a, b) for a, b in zip(kept, [enc.h, *enc.skips, enc.emb]))  # nothing in place
        assert torch.equal(net.decode(enc, h=enc.h), first)
        edited = net.decode(enc, h=enc.h + 0.5 * torch.randn_like(enc.h))
        assert _max_err(edited, first) > 1e-3


@pytest.mark.parametrize("family", ["ddpm", "adm"])
def test_batched_decode_equals_separate(nets, family):
    net, d = nets[family]
    with torch.no_grad():
        enc = net.encode(d["x"], d["t"])
        h2 = enc.h + 0.3 * torch.randn_like(enc.h)
        both = net.decode(enc, h=torch.cat([enc.h, h2]))
        B = enc.batch_size
        assert both.shape[0] == 2 * B
        assert _max_err(both[:B], net.decode(enc)) < 1e-5
        assert _max_err(both[B:], net.decode(enc, h=h2)) < 1e-5
        assert _max_err(both[:B], both[B:]) > 1e-3


# -- random init ---------------------------------------------------------------------------------------------------
def test_random_init_is_logged(caplog):
    cfg = torch.load(REFERENCE_NETS / "ddpm_tiny.pt", weights_only=True)["config"]
    with caplog.at_level(logging.WARNING, logger="asyrp.backbones"):  # another test may have quieted it
        net = load_backbone("ddpm", cfg)
    assert any("RANDOM" in r.getMessage() for r in caplog.records)
    assert not any(p.requires_grad for p in net.parameters())


def test_unknown_family_lists_families():
    with pytest.raises(ValueError, match="ddpm, adm, ncsnpp, diffusers"):
        load_backbone("stylegan", {})


def test_dtype_and_device_arguments(nets):
    _, d = nets["ddpm"]
    net = load_backbone("ddpm", d["config"], d["state_dict"], dtype=torch.float64)
    assert all(p.dtype == torch.float64 for p in net.parameters())
    with torch.no_grad():
        assert _max_err(net(d["x"].double(), d["t"]).float(), d["eps"]) < TOL


# -- diffusers folders ---------------------------------------------------------------------------------------------
TINY_UNET = dict(
    sample_size=16,
    in_channels=3,
    out_channels=3,
    block_out_channels=[32, 64],
    layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D"],
    norm_num_groups=8,
    attention_head_dim=16,
)


def _saved_unet(folder: Path, safe: bool = True, **overrides):
    from diffusers import UNet2DModel

    torch.manual_seed(0)
    unet = UNet2DModel(**{**TINY_UNET, **overrides}).eval()
    unet.save_pretrained(folder, safe_serialization=safe)
    return unet


@pytest.mark.parametrize("safe", [True, False])
def test_diffusers_folder_roundtrip(tmp_path, safe):
    unet = _saved_unet(tmp_path, safe)
    assert (tmp_path / ("diffusion_pytorch_model.safetensors" if safe else "diffusion_pytorch_model.bin")).exists()
    net = load_backbone("diffusers", None, tmp_path)
    assert net.family == "diffusers" and net.image_size == 16 and net.eps_channels == 3
    x, t = torch.randn(2, 3, 16, 16), torch.tensor([3, 700])
    with torch.no_grad():
        assert torch.equal(net(x, t), unet(x, t).sample)
    assert net.h_shape == (64, 8, 8) and net.emb_dim == 128
    assert not any(p.requires_grad for p in net.parameters())


def test_diffusers_folder_checked_against_config(tmp_path):
    _saved_unet(tmp_path)
    subset = {k: TINY_UNET[k] for k in ("sample_size", "block_out_channels", "down_block_types")}
    load_backbone("diffusers", subset, tmp_path)  # agrees: fine
    from asyrp.backbones import CheckpointError

    with pytest.raises(CheckpointError, match="block_out_channels"):
        load_backbone("diffusers", {**subset, "block_out_channels": [32, 128]}, tmp_path)


def test_diffusers_learned_sigma_and_random_init(tmp_path):
    _saved_unet(tmp_path, out_channels=6)
    net = load_backbone("diffusers", None, tmp_path)
    assert (net.out_channels, net.eps_channels) == (6, 3)
    rnd = load_backbone("diffusers", TINY_UNET, None)
    assert isinstance(rnd, Backbone) and rnd.out_channels == 3


def test_diffusers_pipeline_folder_uses_unet_subfolder(tmp_path):
    unet = _saved_unet(tmp_path / "unet")
    (tmp_path / "model_index.json").write_text("{}")
    net = load_backbone("diffusers", None, tmp_path)
    x = torch.randn(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(net(x, 5), unet(x, 5).sample)


# -- DDIM inversion -> generation on a tiny backbone ---------------------------------------------------------------
def test_ddim_round_trip_reconstructs_and_improves_with_steps():
    """A tiny DDPM net with small smooth outputs (conv_out scaled by 0.1), inverted to t0 = 300 and generated back.

    With a random net the round trip is exact only in the step-size limit (eps is evaluated at a different x on the
    way back), so the error must be small and shrink roughly as 1/n; t0 < 999 keeps 1/sqrt(a_t0) from amplifying it.
    """
    from asyrp.ddim import ddim_generate, ddim_invert
    from asyrp.schedules import alphas_cumprod, make_betas, timesteps

    d = torch.load(REFERENCE_NETS / "ddpm_tiny.pt", weights_only=True)
    sd = dict(d["state_dict"])
    sd["conv_out.weight"] = sd["conv_out.weight"] * 0.1
    sd["conv_out.bias"] = sd["conv_out.bias"] * 0.1
    net = load_backbone("ddpm", d["config"], sd)
    low = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    x0 = F.interpolate(low, size=32, mode="bilinear", align_corners=False)
    a = alphas_cumprod(make_betas("linear"))
    errors = {}
    for n in (10, 40):
        seq = timesteps(n, t0=300)
        x_T = ddim_invert(net, x0, seq, a)
        assert (x_T - x0).abs().mean() > 0.1  # the walk really moved away from x0
        errors[n] = (ddim_generate(net, x_T, seq, a) - x0).abs().max().item()
    assert errors[10] < 0.06
    assert errors[40] < errors[10] / 3
