"""Reading checkpoints safely, unwrapping containers, and the messages a mismatch produces."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from asyrp.backbones import CheckpointError, adm, ddpm, load_backbone
from asyrp.backbones import diffusers as diffusers_family
from asyrp.backbones.checkpoints import layout_of, read_checkpoint, suggest_arch

REFERENCE_NETS = Path(__file__).parents[1] / "fixtures" / "reference_nets"
ARCH = Path(__file__).parents[2] / "conf" / "arch"
LAYOUTS = json.loads((REFERENCE_NETS / "checkpoint_layouts.json").read_text())


@pytest.fixture(scope="module")
def tiny():
    return torch.load(REFERENCE_NETS / "ddpm_tiny.pt", weights_only=True)


def _eps_err(net, d) -> float:
    with torch.no_grad():
        return (net(d["x"], d["t"]) - d["eps"]).abs().max().item()


def _zeros(sd):
    return {k: torch.zeros_like(v) for k, v in sd.items()}


# -- reading files -------------------------------------------------------------------------------------------------
def test_missing_file_names_the_path(tiny, tmp_path):
    path = tmp_path / "nowhere" / "celeba_hq.ckpt"
    with pytest.raises(CheckpointError, match="not found: .*nowhere/celeba_hq.ckpt"):
        load_backbone("ddpm", tiny["config"], path)


class _Payload:
    """Pickles as a call to open(marker, "w"): loading it unsafely would create the marker file."""

    def __init__(self, marker: str):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickled_code_is_refused_not_run(tiny, tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": tiny["state_dict"], "hook": _Payload(str(marker))}, path)
    with pytest.raises(CheckpointError) as err:
        load_backbone("ddpm", tiny["config"], path)
    msg = str(err.value)
    assert "refused for safety" in msg and "safetensors" in msg
    assert "open" in msg.split("Refused object:")[1]  # names what was refused
    assert not marker.exists()


@pytest.mark.parametrize("suffix", [".ckpt", ".pt", ".pth", ".bin"])
def test_torch_suffixes(tiny, tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    torch.save(tiny["state_dict"], path)
    assert _eps_err(load_backbone("ddpm", tiny["config"], path), tiny) < 1e-4


def test_safetensors_file(tiny, tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in tiny["state_dict"].items()}, path)
    assert _eps_err(load_backbone("ddpm", tiny["config"], path), tiny) < 1e-4


def test_corrupt_file(tiny, tmp_path):
    path = tmp_path / "truncated.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="re-download"):
        load_backbone("ddpm", tiny["config"], path)


def test_directory_for_a_file_family(tiny, tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(CheckpointError, match="family 'diffusers'"):
        load_backbone("ddpm", tiny["config"], tmp_path)


# -- containers ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "wrap",
    [
        lambda sd: {"state_dict": sd},
        lambda sd: {"model": {"state_dict": sd}, "step": 3},
        lambda sd: {"module." + k: v for k, v in sd.items()},
        lambda sd: {"state_dict": {"module." + k: v for k, v in sd.items()}, "epoch": 1},
        lambda sd: {"ema_model": sd},
    ],
    ids=["state_dict", "nested_model", "module_prefix", "nested_prefixed", "ema_model"],
)
def test_nested_containers_load(tiny, tmp_path, wrap):
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(tiny["state_dict"]), path)
    assert _eps_err(load_backbone("ddpm", tiny["config"], path), tiny) < 1e-4


def test_ddim_list_checkpoint_ema_choice(tiny, tmp_path):
    """DDIM training checkpoints: [model, optimizer, epoch, step, ema], DataParallel-prefixed; EMA last."""
    prefixed = lambda sd: {"module." + k: v for k, v in sd.items()}  # noqa: E731
    optimizer = {"state": {}, "param_groups": [{"lr": 2e-4, "betas": (0.9, 0.999), "params": [0, 1]}]}
    path = tmp_path / "ckpt.pth"
    torch.save([prefixed(_zeros(tiny["state_dict"])), optimizer, 10, 5000, prefixed(tiny["state_dict"])], path)
    assert _eps_err(load_backbone("ddpm", tiny["config"], path), tiny) < 1e-4  # default: the EMA
    assert _eps_err(load_backbone("ddpm", tiny["config"], path, ema=True), tiny) < 1e-4
    raw = load_backbone("ddpm", tiny["config"], path, ema=False)
    assert all(torch.count_nonzero(p) == 0 for p in raw.parameters())


def test_model_and_ema_dict(tiny):
    ckpt = {"model": _zeros(tiny["state_dict"]), "ema": tiny["state_dict"], "optimizer": {}}
    assert _eps_err(load_backbone("ddpm", tiny["config"], ckpt), tiny) < 1e-4
    assert read_checkpoint(ckpt, ema=False)["conv_in.weight"].abs().sum() == 0


def test_ema_requested_but_absent(tiny):
    with pytest.raises(CheckpointError, match="ema=True"):
        load_backbone("ddpm", tiny["config"], tiny["state_dict"], ema=True)
    with pytest.raises(CheckpointError, match="EMA"):
        read_checkpoint([tiny["state_dict"], {"state": {}, "param_groups": []}, 1, 2], ema=True)


def test_unnamed_ema_shadow_params():
    """score_sde stores the EMA as a list in parameters() order; buffers (here `sigmas`) are not in it."""
    raw = {"module.sigmas": torch.ones(10), "module.a.weight": torch.zeros(4, 3), "module.a.bias": torch.zeros(4)}
    shadow = [torch.full((4, 3), 2.0), torch.full((4,), 3.0)]
    sd = read_checkpoint({"model": raw, "ema": {"decay": 0.999, "num_updates": 5, "shadow_params": shadow}})
    assert list(sd) == ["sigmas", "a.weight", "a.bias"]
    assert torch.equal(sd["sigmas"], torch.ones(10)) and torch.equal(sd["a.weight"], shadow[0])
    with pytest.raises(CheckpointError, match="EMA"):
        read_checkpoint({"model": raw, "ema": {"shadow_params": shadow + [torch.zeros(7)]}})


def test_no_state_dict_inside(tmp_path):
    with pytest.raises(CheckpointError, match="no state dict found"):
        read_checkpoint({"step": 3, "config": {"lr": 1.0}})


def test_saved_backbone_state_dict_loads_back(tiny, tmp_path):
    net = load_backbone("ddpm", tiny["config"], tiny["state_dict"])
    path = tmp_path / "ours.pt"
    torch.save(net.state_dict(), path)  # our own keys: no conversion needed
    again = load_backbone("ddpm", tiny["config"], path)
    with torch.no_grad():
        assert torch.equal(again(tiny["x"], tiny["t"]), net(tiny["x"], tiny["t"]))


# -- mismatches ----------------------------------------------------------------------------------------------------
def test_wrong_family_suggests_the_matching_arch(tiny):
    adm_cfg = torch.load(REFERENCE_NETS / "adm_tiny.pt", weights_only=True)["config"]
    with pytest.raises(CheckpointError) as err:
        load_backbone("adm", adm_cfg, tiny["state_dict"])
    msg = str(err.value)
    assert "family 'adm'" in msg
    assert "missing keys: input_blocks.0.0.weight" in msg and "unexpected keys: temb.dense.0.weight" in msg
    assert "arch=tiny_ddpm (family ddpm)" in msg


def test_misshaped_key_is_named(tiny):
    sd = {**tiny["state_dict"], "conv_in.weight": torch.zeros(32, 3, 5, 5)}
    with pytest.raises(CheckpointError) as err:
        load_backbone("ddpm", tiny["config"], sd)
    msg = str(err.value)
    assert "conv_in.weight: checkpoint (32, 3, 5, 5), expected (32, 3, 3, 3)" in msg
    assert "closest is arch=tiny_ddpm" in msg


def test_wrong_config_names_keys_and_right_arch(tiny):
    cfg = {**tiny["config"], "ch_mult": [1, 2, 4]}
    with pytest.raises(CheckpointError) as err:
        load_backbone("ddpm", cfg, tiny["state_dict"])
    msg = str(err.value)
    assert "down.2.block.0.conv1.weight: checkpoint (64, 64, 3, 3), expected (128, 64, 3, 3)" in msg
    assert "missing keys: down.2.block.0.nin_shortcut.weight" in msg
    assert "arch=tiny_ddpm" in msg


def test_missing_and_unexpected_keys(tiny):
    sd = dict(tiny["state_dict"])
    del sd["mid.attn_1.q.weight"]
    sd["mid.attn_1.extra"] = torch.zeros(1)
    with pytest.raises(
        CheckpointError, match=r"missing keys: mid\.attn_1\.q\.weight; unexpected keys: mid\.attn_1\.extra"
    ):
        load_backbone("ddpm", tiny["config"], sd)


def test_full_size_layouts_suggest_all_matching_archs():
    """Published checkpoints that share a layout are all named (SDEdit CelebA-HQ and LSUN; the P2 / AFHQ models)."""
    expected = {
        "celeba_hq_256_sdedit": {"celeba_hq", "lsun_church", "lsun_bedroom"},
        "cifar10_32_ddim": {"cifar10_ddim"},
        "afhq_dog_256_ilvr_and_p2_faces_256": {"afhq_dog", "ffhq_p2", "metfaces_p2", "celeba_hq_p2"},
        "imagenet_256_uncond_adm": {"imagenet256_uncond"},
    }
    for name, archs in expected.items():
        found = {k: tuple(s) for k, s in LAYOUTS[name]["keys"]}
        exact, _ = suggest_arch(found)
        assert {n for n, _ in exact} == archs, name


# -- the shipped arch configs --------------------------------------------------------------------------------------
MINE = {
    "celeba_hq": ("ddpm", "celeba_hq_256_sdedit"),
    "lsun_church": ("ddpm", "lsun_church_bedroom_256_sdedit"),
    "lsun_bedroom": ("ddpm", "lsun_church_bedroom_256_sdedit"),
    "cifar10_ddim": ("ddpm", "cifar10_32_ddim"),
    "afhq_dog": ("adm", "afhq_dog_256_ilvr_and_p2_faces_256"),
    "ffhq_p2": ("adm", "afhq_dog_256_ilvr_and_p2_faces_256"),
    "metfaces_p2": ("adm", "afhq_dog_256_ilvr_and_p2_faces_256"),
    "celeba_hq_p2": ("adm", "afhq_dog_256_ilvr_and_p2_faces_256"),
    "imagenet256_uncond": ("adm", "imagenet_256_uncond_adm"),
}
DIFFUSERS = {
    "ddpm_ema_celebahq_256": "celeba_hq_256_sdedit",
    "ddpm_ema_church_256": "lsun_church_bedroom_256_sdedit",
    "ddpm_ema_bedroom_256": "lsun_church_bedroom_256_sdedit",
    "ddpm_cifar10_32": "cifar10_32_ddim",
}


def _arch(name):
    return OmegaConf.load(ARCH / f"{name}.yaml")


@pytest.mark.parametrize("name", sorted(MINE) + sorted(DIFFUSERS) + ["tiny_ddpm", "tiny_adm"])
def test_arch_config_fields(name, monkeypatch):
    monkeypatch.setenv("ASYRP_CHECKPOINTS", "/ckpts")
    arch = _arch(name)
    assert set(arch) == {"name", "family", "config", "checkpoint", "beta_schedule"}
    assert arch.name == name and arch.beta_schedule == "linear"
    if name.startswith("tiny_"):
        assert arch.checkpoint is None
    else:
        assert arch.checkpoint.startswith("/ckpts/")


@pytest.mark.parametrize("name", sorted(MINE))
def test_arch_config_layout_matches_published(name):
    family, layout = MINE[name]
    module = {"ddpm": ddpm, "adm": adm}[family]
    arch = _arch(name)
    assert arch.family == family
    cfg = OmegaConf.to_container(arch.config)
    assert module.upstream_layout(cfg) == {k: tuple(s) for k, s in LAYOUTS[layout]["keys"]}


@pytest.mark.parametrize("name", sorted(DIFFUSERS))
def test_diffusers_arch_is_the_ddpm_network(name):
    """The google/ddpm-* folders hold the DDPM-family network: same keys and shapes as the converted upstream model."""
    arch = _arch(name)
    assert arch.family == "diffusers"
    ddpm_cfg = LAYOUTS[DIFFUSERS[name]]["config"]
    with torch.device("meta"):
        ours = ddpm.build(ddpm_cfg).state_dict()
    expected = {k[len("unet.") :]: tuple(v.shape) for k, v in ours.items()}
    assert diffusers_family.upstream_layout(OmegaConf.to_container(arch.config)) == expected


@pytest.mark.parametrize("family", ["ddpm", "adm"])
def test_tiny_arch_equals_fixture_config(family):
    d = torch.load(REFERENCE_NETS / f"{family}_tiny.pt", weights_only=True)
    arch = _arch(f"tiny_{family}")
    assert OmegaConf.to_container(arch.config) == d["config"]
    net = load_backbone(arch.family, arch.config, d["state_dict"])  # a DictConfig is accepted as config
    assert layout_of(net.state_dict()) == layout_of(load_backbone(family, d["config"]).state_dict())
