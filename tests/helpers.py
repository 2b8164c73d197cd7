"""Shared test helpers: a tiny random backbone that runs in milliseconds on one CPU thread."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from asyrp.backbones.base import UNet2DBackbone


def tiny_backbone(
    seed: int = 0,
    *,
    image_size: int = 16,
    block_out_channels: tuple[int, ...] = (32, 64),
    norm_num_groups: int = 8,
    layers_per_block: int = 1,
    out_channels: int = 3,
    family: str | None = None,
    dtype: torch.dtype = torch.float32,
) -> UNet2DBackbone:
    """A frozen random ``diffusers.UNet2DModel`` split at its mid block (h: 64 x 8 x 8 by default).

    ``out_channels=6`` mimics a learned-variance (ADM) model; ``family`` sets ``backbone.family`` (e.g. "adm") so
    code that dispatches on it can be tested. ``dtype=torch.float64`` for tests that compare long trajectories:
    a random net is no denoiser, so DDIM amplifies round-off (e.g. batch-size dependent kernels) by ~1/sqrt(a_T).
    """
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    n = len(block_out_channels)
    unet = UNet2DModel(
        sample_size=image_size,
        in_channels=3,
        out_channels=out_channels,
        block_out_channels=block_out_channels,
        down_block_types=("DownBlock2D",) * n,
        up_block_types=("UpBlock2D",) * n,
        layers_per_block=layers_per_block,
        norm_num_groups=norm_num_groups,
    )
    backbone = UNet2DBackbone(unet, {"image_size": image_size}, eps_channels=3).to(dtype).freeze()
    if family is not None:
        backbone.family = family
    return backbone


def images(n: int = 2, *, size: int = 16, seed: int = 0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Smooth random images in [-1, 1] (low-frequency, so they look a little like pictures)."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, 3, size // 4, size // 4, generator=g) * 2 - 1
    return (
        torch.nn.functional.interpolate(low, size=(size, size), mode="bilinear", align_corners=False)
        .clamp(-1, 1)
        .to(dtype)
    )


def tiny_hfunction_file(
    d, *, n_steps: int = 4, attribute: str | None = "smiling", strength: float | None = 1.0, official: bool = False
):
    """A delta_block h-function for the random tiny_ddpm backbone (torch seed 0), written as ``d / "hf.pt"``
    (and ``d / "hf_official.pth"`` with ``official``) through asyrp.hfunctions; returns the backbone."""
    from asyrp import build
    from asyrp.config import compose
    from asyrp.hfunctions import build_hfunction, payload, save_hfunction

    cfg = compose("edit", ["arch=tiny_ddpm", "checkpoint=x", "input_dir=x"], output_dir=d / "r")
    torch.manual_seed(0)
    bb = build.backbone(cfg.arch)
    hf = build_hfunction({"kind": "delta_block", "layout": "ddpm", "seed": 0}, bb)
    edit = {"t_edit": 500, "t_boost": 200, "n_inv": n_steps, "n_gen": n_steps, "t0": 999, "mode": "asyrp"}
    if strength is not None:
        edit["strength"] = strength
    info = {
        "hfunction": {"kind": "delta_block", "layout": "ddpm"},
        "arch": {"name": "tiny_ddpm"},
        "h_shape": list(bb.h_shape),
        "emb_dim": int(bb.emb_dim),
        **({"attribute": {"name": attribute}} if attribute else {}),
        "edit": edit,
    }
    save_hfunction(payload(hf, info), d / "hf.pt", official_path=d / "hf_official.pth" if official else None)
    return bb


#: the seed rule of the IR-SE50 fixture (tests/fixtures/identity), stored in it as text
SEEDED_STATE_RULE = (
    "one torch.Generator seeded with `seed`, walked over the state-dict keys in the upstream order; per key one "
    "randn draw z of the key's shape (none for num_batches_tracked, which is 0): running_mean = 0.1 z, running_var = "
    "exp(0.2 z), other 1-d weights (BatchNorm scale, PReLU slope) = 1 + 0.1 z, biases = 0.1 z, weights of 2 or more "
    "dims = z / sqrt(fan_in) with fan_in = numel / shape[0]"
)


def seeded_state(keys: list[str], shapes: list[list[int]], seed: int) -> dict[str, torch.Tensor]:
    """Weights for a network with these state-dict keys by SEEDED_STATE_RULE (BatchNorm statistics kept sane)."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for key, shape in zip(keys, shapes):
        if key.endswith("num_batches_tracked"):
            out[key] = torch.tensor(0)
            continue
        z = torch.randn(*shape, generator=g)
        if key.endswith("running_mean"):
            out[key] = 0.1 * z
        elif key.endswith("running_var"):
            out[key] = torch.exp(0.2 * z)
        elif key.endswith("bias"):
            out[key] = 0.1 * z
        elif z.dim() == 1:
            out[key] = 1 + 0.1 * z
        else:
            out[key] = z / (z.numel() / z.shape[0]) ** 0.5
    return out


def tiny_directions(folder: Path, n: int = 2, *, arch: str = "tiny_ddpm") -> list[Path]:
    """n random per-t direction files for the tiny_ddpm backbone (found on ``arch``), as discover.py writes them:
    what conf/constraint's projection reads."""
    from asyrp import build
    from asyrp.config import compose
    from asyrp.directions import Direction, save_direction

    torch.manual_seed(0)
    bb = build.backbone(compose("train", ["debug=smoke"], output_dir=folder).arch)
    g = torch.Generator().manual_seed(1)
    ts = [999, 666, 333, 0]
    return [
        save_direction(
            Direction(torch.randn(len(ts), *bb.h_shape, generator=g), ts, "mean_diff", i),
            folder / f"keep_{i}.pt",
            bb,
            arch={"name": arch},
            edit={"t0": 999},
        )
        for i in range(n)
    ]


def _has(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


#: sweeps run on asyrp's sweeper over Optuna >= 4 (pip install -e '.[dev]' installs it)
needs_sweep = pytest.mark.skipif(
    not _has("optuna.storages.journal"), reason="needs Optuna >= 4: pip install -e '.[sweep]'"
)
