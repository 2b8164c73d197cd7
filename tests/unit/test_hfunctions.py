"""h-functions: official checkpoint parity, the two block layouts, global directions, composition, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import ASYRP_OFFICIAL
from helpers import tiny_backbone
from omegaconf import OmegaConf

from asyrp.hfunctions import (
    ADM_KEYS,
    DDPM_KEYS,
    Composition,
    DeltaBlock,
    GlobalDirection,
    apply_hfunction,
    build_hfunction,
    load_hfunction_weights,
    load_official_hfunction,
)

CONF = Path(__file__).resolve().parents[2] / "conf" / "hfunction"
OFFICIAL = {
    "ddpm": ("smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth", "asyrp_official_smiling_celeba_delta.pt"),
    "adm": ("metface_smiling_LC_metfaces_t999_ninv40_ngen40_0.pth", "asyrp_official_metface_smiling_delta.pt"),
}


def _fixture(name):
    return torch.load(ASYRP_OFFICIAL / name, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("layout", ["ddpm", "adm"])
@torch.no_grad()
def test_official_checkpoint_parity(layout):
    ckpt, ref_file = OFFICIAL[layout]
    f = load_official_hfunction(ASYRP_OFFICIAL / ckpt)
    ref = _fixture(ref_file)
    assert isinstance(f, DeltaBlock) and f.kind == layout == ref["kind"]
    assert (f.channels, f.emb_dim, f.width) == (512, 512, 512)
    assert not f.training
    err_temb = (f(ref["h"], ref["temb"]) - ref["delta_h"]).abs().max().item()
    err_none = (f(ref["h"], None) - ref["delta_h_no_temb"]).abs().max().item()
    assert err_temb < 1e-4 and err_none < 1e-4
    # the time embedding really matters (the two references differ), and t is accepted and ignored
    assert (ref["delta_h"] - ref["delta_h_no_temb"]).abs().max() > 1e-2
    assert torch.equal(f(ref["h"], ref["temb"], 500), f(ref["h"], ref["temb"]))
    # time_conditioned=False is the no-temb call
    f.time_conditioned = False
    assert torch.equal(f(ref["h"], ref["temb"]), f(ref["h"], None))


@pytest.mark.parametrize("layout", ["ddpm", "adm"])
def test_bare_state_dict_and_own_blocks_load_strictly(layout, tmp_path):
    ckpt, ref_file = OFFICIAL[layout]
    sd = _fixture(ckpt)["0"]
    assert frozenset(sd) == (DDPM_KEYS if layout == "ddpm" else ADM_KEYS)
    # a fresh block of the same layout has exactly the published parameter names and shapes
    fresh = DeltaBlock(layout, 512, 512)
    assert {k: tuple(v.shape) for k, v in fresh.state_dict().items()} == {k: tuple(v.shape) for k, v in sd.items()}
    torch.save(sd, tmp_path / "bare.pt")
    f = load_official_hfunction(tmp_path / "bare.pt")
    ref = _fixture(ref_file)
    with torch.no_grad():
        assert (f(ref["h"], ref["temb"]) - ref["delta_h"]).abs().max() < 1e-4
    # strict: a missing parameter is an error, not a silent partial load
    broken = dict(sd)
    broken.pop(sorted(broken)[0])
    torch.save({"0": broken}, tmp_path / "broken.pth")
    with pytest.raises(ValueError, match="not an Asyrp h-function"):
        load_official_hfunction(tmp_path / "broken.pth")
    with pytest.raises(RuntimeError):
        load_hfunction_weights(DeltaBlock(layout, 512, 512, width=256), ASYRP_OFFICIAL / ckpt)


def test_unrecognised_files_fail_clearly(tmp_path):
    torch.save({"model": {"conv.weight": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="unrecognised file"):
        load_official_hfunction(tmp_path / "other.pt")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "sd.pt")
    with pytest.raises(ValueError, match="DDPM block keys"):
        load_official_hfunction(tmp_path / "sd.pt")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match="cannot be read"):
        load_official_hfunction(tmp_path / "junk.pth")


def test_official_global_delta_h_files(tmp_path):
    table = {str(t): torch.randn(4, 2, 2) for t in (999, 973, 947)}
    torch.save({**table, "optimizer": {}, "scheduler": {}}, tmp_path / "per_t.pth")
    g = load_official_hfunction(tmp_path / "per_t.pth")
    h = torch.zeros(2, 4, 2, 2)
    assert torch.equal(g(h, None, 973), table["973"].expand(2, -1, -1, -1))
    assert torch.equal(g(h, None, 965), table["973"].expand(2, -1, -1, -1))  # nearest listed t
    assert torch.equal(g(h, None, 960), table["947"].expand(2, -1, -1, -1))  # a tie goes to the smaller t
    torch.save({"0": table["999"]}, tmp_path / "global.pth")
    g = load_official_hfunction(tmp_path / "global.pth")
    assert not g.per_timestep and torch.equal(g(h)[1], table["999"])


@pytest.mark.parametrize("layout", ["ddpm", "adm"])
def test_delta_block_width_zero_init_and_grad(layout):
    torch.manual_seed(0)
    h, emb = torch.randn(3, 64, 8, 8), torch.randn(3, 128)
    f = DeltaBlock(layout, 64, 128, width=96)
    out = f(h, emb)
    assert out.shape == h.shape and out.abs().sum() > 0
    z = DeltaBlock(layout, 64, 128, zero_init=True)
    assert torch.count_nonzero(z(h, emb)) == 0
    z(h, emb).sum().backward()  # a zero-initialised last conv still gets gradients
    last = z.conv2 if layout == "ddpm" else z.out_layers[3]
    assert last.weight.grad.abs().sum() > 0
    with pytest.raises(ValueError, match="num_groups"):
        DeltaBlock(layout, 64, 128, width=48)


@pytest.mark.parametrize("layout", ["ddpm", "adm"])
def test_delta_block_kernel_sees_neighbouring_cells(layout, tmp_path):
    """kernel_size 1 (official) maps each cell of h alone; 3 lets a cell's delta_h depend on its neighbours, and the
    file format reads the size back from the weights."""
    torch.manual_seed(0)
    h, emb = torch.randn(1, 64, 8, 8), torch.randn(1, 128)
    h2 = h.clone()
    h2[:, :, 3, 3] += 1.0  # change one cell
    near = torch.zeros(8, 8, dtype=torch.bool)
    near[2:5, 2:5] = True
    near[3, 3] = False
    far = torch.ones(8, 8, dtype=torch.bool)
    far[1:6, 1:6] = False
    for k in (1, 3):
        f = DeltaBlock(layout, 64, 128, kernel_size=k)
        with torch.no_grad():
            d = (f(h2, emb) - f(h, emb)).abs().sum(1)[0]
        ratio = float(d[near].mean() / d[far].mean())  # the GroupNorm statistics move every cell a little
        assert (ratio < 1.5) if k == 1 else (ratio > 5), (k, ratio)
    torch.save(f.state_dict(), tmp_path / "k3.pt")
    g = load_official_hfunction(tmp_path / "k3.pt")
    assert g.kernel_size == 3 and torch.equal(g(h, emb), f.eval()(h, emb))
    if layout == "ddpm":  # the tiny backbone builds the ddpm block
        cfg = {"kind": "delta_block", "kernel_size": 3, "checkpoint": str(tmp_path / "k3.pt")}
        assert build_hfunction(cfg, tiny_backbone()).kernel_size == 3
    with pytest.raises(ValueError, match="odd size"):
        DeltaBlock(layout, 64, 128, kernel_size=2)


def test_global_direction_per_timestep_lookup():
    g = GlobalDirection((2, 3, 3), timesteps=[999, 0, 500], init_std=1.0)
    assert g.timesteps.tolist() == [0, 500, 999]
    h = torch.zeros(3, 2, 3, 3)
    out = g(h, None, torch.tensor([999.0, 260.0, 240.0]))
    assert torch.equal(out[0], g.delta_h[2].data) and torch.equal(out[1], g.delta_h[1].data)
    assert torch.equal(out[2], g.delta_h[0].data)
    assert torch.equal(g(h, None, 500), g.delta_h[1].data.expand(3, -1, -1, -1))
    with pytest.raises(ValueError, match="needs t"):
        g(h)
    with pytest.raises(ValueError, match="shape"):
        g(torch.zeros(1, 2, 4, 4), None, 0)
    flat = GlobalDirection((2, 3, 3), init_std=0.0)
    assert torch.count_nonzero(flat(h, None, 7)) == 0


def test_time_window_acts_only_inside_its_timesteps():
    from asyrp.hfunctions import TimeWindow

    g = GlobalDirection((2, 3, 3), init_std=1.0)
    w = TimeWindow(g, 500, 300)
    h = torch.zeros(4, 2, 3, 3)
    out = w(h, None, torch.tensor([600, 500, 300, 299]))  # per row: above, both ends, below
    assert torch.count_nonzero(out[0]) == 0 and torch.count_nonzero(out[3]) == 0
    full = g(h, None, 400)
    assert torch.equal(out[1], full[1]) and torch.equal(out[2], full[2])
    assert torch.equal(w(h, None, 400), g(h, None, 400)) and torch.count_nonzero(w(h, None, 250)) == 0
    with pytest.raises(ValueError, match="above"):
        TimeWindow(g, 300, 500)
    with pytest.raises(ValueError, match="timestep"):
        w(h)


def test_strength_composition_and_batched_coefficients():
    torch.manual_seed(0)
    h, emb = torch.randn(2, 64, 8, 8), torch.randn(2, 128)
    f1, f2 = DeltaBlock("ddpm", 64, 128), DeltaBlock("adm", 64, 128)
    d1, d2 = f1(h, emb), f2(h, emb)
    # strength scaling, negative allowed
    assert torch.allclose(apply_hfunction(f1, h, emb, None, -1.5), -1.5 * d1)
    # composition = the weighted sum
    comp = Composition([f1, f2], [0.7, -0.3])
    assert torch.allclose(comp(h, emb), 0.7 * d1 - 0.3 * d2, atol=1e-6)
    # K coefficient vectors for the same images in one batched evaluation == the loop
    C = torch.tensor([[1.0, 0.0], [0.5, 0.5], [-1.0, 2.0]])
    K, B = C.shape[0], h.shape[0]
    rows = C.repeat_interleave(B, dim=0)
    batched = apply_hfunction(comp, h.repeat(K, 1, 1, 1), emb.repeat(K, 1), None, rows)
    for k in range(K):
        loop = C[k, 0] * d1 + C[k, 1] * d2
        assert torch.allclose(batched[k * B : (k + 1) * B], loop, atol=1e-5)
    # one strength per row
    per_row = apply_hfunction(f1, h, emb, None, torch.tensor([2.0, -1.0]))
    assert torch.allclose(per_row, torch.stack([2 * d1[0], -d1[1]]))
    with pytest.raises(ValueError, match="do not fit"):
        apply_hfunction(f1, h, emb, None, torch.ones(3))


@pytest.mark.parametrize("family,expected", [("ddpm", "ddpm"), ("adm", "adm"), ("ncsnpp", "ddpm")])
def test_build_from_the_shipped_configs(family, expected):
    bb = tiny_backbone(0, family=family)
    cfg = OmegaConf.load(CONF / "delta_block.yaml")
    f = build_hfunction(cfg, bb)
    assert isinstance(f, DeltaBlock) and f.kind == expected
    assert (f.channels, f.emb_dim, f.width) == (bb.h_channels, bb.emb_dim, bb.h_channels)
    x = torch.randn(2, 3, 16, 16)
    enc = bb.encode(x, 400)
    assert f(enc.h, enc.emb).shape == enc.h.shape
    g = build_hfunction(OmegaConf.load(CONF / "global.yaml"), bb)
    assert isinstance(g, GlobalDirection) and g.shape == bb.h_shape and not g.per_timestep
    gt = build_hfunction(OmegaConf.load(CONF / "global_per_t.yaml"), bb)
    assert gt.per_timestep and len(gt.timesteps) == 40 and int(gt.timesteps[-1]) == 999


def test_build_options_seed_checkpoint_and_errors(tmp_path):
    bb = tiny_backbone(0)
    cfg = {"kind": "delta_block", "layout": "adm", "width": 32, "zero_init": True, "seed": 3, "use_temb": False}
    f = build_hfunction(cfg, bb)
    assert f.kind == "adm" and f.width == 32 and not f.time_conditioned
    assert torch.count_nonzero(f.out_layers[3].weight) == 0
    a, b = build_hfunction({"kind": "global", "seed": 5}, bb), build_hfunction({"kind": "global", "seed": 5}, bb)
    assert torch.equal(a.delta_h, b.delta_h)
    torch.save({"0": a.state_dict()}, tmp_path / "g.pth")
    c = build_hfunction({"kind": "global", "seed": 6, "checkpoint": str(tmp_path / "g.pth")}, bb)
    assert torch.equal(c.delta_h, a.delta_h)
    with pytest.raises(ValueError, match="unknown key"):
        build_hfunction({"kind": "delta_block", "widht": 3}, bb)
    with pytest.raises(ValueError, match="unknown h-function kind"):
        build_hfunction({"kind": "mlp"}, bb)


def test_build_image_space_directions():
    """space eps / x (conf/hfunction/eps_shift, x_shift): an image-shaped table from zero, applied to eps in P_t or to
    x_t by the mode of its space only; h-space configs stay as they were (no space key means h)."""
    from asyrp.hfunctions import check_space_mode, hfunction_space
    from asyrp.samplers import edit_eps

    bb = tiny_backbone(0)
    for name, space, mode in (("eps_shift", "eps", "eps_shift"), ("x_shift", "x", "x_shift")):
        g = build_hfunction(OmegaConf.load(CONF / f"{name}.yaml"), bb)
        assert isinstance(g, GlobalDirection) and g.shape == (3, 16, 16) and len(g.timesteps) == 40
        assert torch.count_nonzero(g.delta_h) == 0
        check_space_mode({"space": space}, mode, "mode")
        with pytest.raises(ValueError, match=f"set mode={mode}"):
            check_space_mode({"space": space}, "asyrp", "mode")
    g = build_hfunction({"kind": "global_per_t", "space": "eps", "timesteps": [400], "init_std": 0.0}, bb)
    g.delta_h.data.fill_(0.5)
    x = torch.randn(2, 3, 16, 16)
    ee = edit_eps(bb, x, 400, g, mode="eps_shift")
    assert torch.allclose(ee.eps_edit - ee.eps, torch.full_like(x, 0.5)) and ee.x_t is None
    assert torch.allclose(edit_eps(bb, x, 400, g, mode="x_shift").x_t, x + 0.5)
    assert hfunction_space(OmegaConf.load(CONF / "delta_block.yaml")) == "h"
    with pytest.raises(ValueError, match="set model.mode=asyrp"):
        check_space_mode(OmegaConf.load(CONF / "global.yaml"), "eps_shift", "model.mode")
    with pytest.raises(ValueError, match="delta_block acts on the bottleneck h only"):
        build_hfunction({"kind": "delta_block", "space": "eps"}, bb)
    with pytest.raises(ValueError, match="unknown h-function space"):
        build_hfunction({"kind": "global", "space": "z"}, bb)


def test_hfunctions_package_imports_one_way():
    """modules <- constrained <- build <- files: no module of the package imports one above it."""
    import ast

    import asyrp.hfunctions as pkg

    rank = {"modules": 0, "constrained": 1, "build": 2, "files": 3}
    for name, level in rank.items():
        tree = ast.parse((Path(pkg.__file__).parent / f"{name}.py").read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                imported = (node.module or "").split(".")[0]
                assert rank[imported] < level, f"hfunctions.{name} imports .{imported} (same level or above it)"
