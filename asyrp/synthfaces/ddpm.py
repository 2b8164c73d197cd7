"""Train the synthfaces DDPM: a diffusers UNet2DModel, epsilon prediction, linear betas 1e-4..0.02 over 1000 steps.

Shipped as a diffusers folder (family ``diffusers``), so ``load_backbone`` loads it like any published checkpoint and
its middle block is the h-space. Resumable: a full training state is saved atomically every few minutes.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..ops.io import atomic_save, atomic_write_json
from ..schedules import alphas_cumprod, make_betas
from .render import render_array

log = logging.getLogger(__name__)

# small enough for ~70 optimizer steps/min at batch 64 on 2 CPU cores; h = 64 x 8 x 8
UNET_CONFIG = {
    "sample_size": 32,
    "in_channels": 3,
    "out_channels": 3,
    "layers_per_block": 1,
    "block_out_channels": [32, 64, 64],
    "down_block_types": ["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    "up_block_types": ["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
    "attention_head_dim": 32,
    "norm_num_groups": 16,
}
TRAIN_SEED = 0  # dataset seed of the training images; held-out images use other seeds


def build_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(**UNET_CONFIG)


def training_images(n: int, size: int = 32) -> torch.Tensor:
    arr, _ = render_array(TRAIN_SEED, 0, n, size)
    return torch.from_numpy(arr).permute(0, 3, 1, 2).contiguous()  # uint8


def _lr(step: int, steps: int, base: float, warmup: int, time_frac: float = 0.0) -> float:
    """Linear warm-up, then cosine decay to 10% of ``base``, driven by whichever is further along: the step count
    (towards ``steps``) or the wall-clock budget (``time_frac``), so the decay completes inside a time budget whatever
    the CPU contention."""
    if step < warmup:
        return base * (step + 1) / warmup
    p = min(1.0, max(time_frac, (step - warmup) / max(1, steps - warmup)))
    return base * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def export(ema_state: dict, out_dir: Path, meta: dict) -> None:
    """Write the EMA weights as a diffusers folder (config.json + safetensors), atomically per file."""
    unet = build_unet()
    unet.load_state_dict(ema_state)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / (out_dir.name + ".tmp")
    unet.save_pretrained(tmp, safe_serialization=True)
    for name in ("config.json", "diffusion_pytorch_model.safetensors"):
        os.replace(tmp / name, out_dir / name)
    atomic_write_json(meta, out_dir / "training.json")
    for p in tmp.iterdir():
        p.unlink()
    tmp.rmdir()


def _start(
    unet, ema, opt, g: torch.Generator, state_path: Path, init_from: str | Path | None, warmup: int
) -> tuple[int, int | None]:
    """(step, warm_start_from_step): the resumable state if there is one, else a warm start from an exported folder
    (fresh optimiser, a new warm-up), else step 0 from scratch."""
    if state_path.exists():
        st = torch.load(state_path, map_location="cpu", weights_only=True)
        unet.load_state_dict(st["model"])
        ema.load_state_dict(st["ema"])
        opt.load_state_dict(st["opt"])
        g.set_state(st["rng"])
        rewarm = st.get("warm_start_from_step")  # lineage (and an unfinished warm-up) survive a resume
        log.info("resumed at step %d", int(st["step"]))
        return int(st["step"]), None if rewarm is None else int(rewarm)
    if init_from is None:
        return 0, None
    from safetensors.torch import load_file

    init_from = Path(init_from)
    sd = load_file(init_from / "diffusion_pytorch_model.safetensors")
    unet.load_state_dict(sd, strict=True)
    ema.load_state_dict(sd, strict=True)
    meta_path = init_from / "training.json"
    step = int(json.loads(meta_path.read_text()).get("step", 0)) if meta_path.is_file() else 0
    log.info("warm start from %s at step %d (fresh optimiser, %d-step warm-up)", init_from, step, warmup)
    return step, step


def _step(
    unet, ema, opt, g: torch.Generator, data: torch.Tensor, a: torch.Tensor, batch_size: int, decay: float
) -> float:
    """One optimiser step of the eps-prediction loss on a random batch at random t, then the EMA update."""
    idx = torch.randint(0, data.shape[0], (batch_size,), generator=g)
    x0 = data[idx].float() / 127.5 - 1
    t = torch.randint(0, 1000, (batch_size,), generator=g)
    noise = torch.randn(x0.shape, generator=g)
    at = a[t].view(-1, 1, 1, 1)
    x_t = at.sqrt() * x0 + (1 - at).sqrt() * noise
    loss = F.mse_loss(unet(x_t, t).sample, noise)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
    opt.step()
    with torch.no_grad():
        for pe, p in zip(ema.parameters(), unet.parameters()):
            pe.lerp_(p, 1 - decay)
    return loss.item()


def _models(lr: float) -> tuple[torch.nn.Module, torch.nn.Module, torch.optim.Optimizer]:
    """The UNet, its EMA copy (frozen, starting equal) and the optimiser."""
    unet, ema = build_unet(), build_unet()
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False)
    return unet, ema, torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=0.0)


def _lineage(step: int, settings: dict, n_params: int, losses: list[float], rewarm: int | None) -> dict:
    """What an exported snapshot says about how it was trained (meta.json beside the weights)."""
    last = float(np.mean(losses[-100:])) if losses else None
    return {
        "step": step,
        **settings,
        "train_seed": TRAIN_SEED,
        "params": n_params,
        "loss_last_100": last,
        "warm_start_from_step": rewarm,
    }


def _set_lr(opt: torch.optim.Optimizer, lr: float, step: int, rewarm: int | None, warmup: int) -> None:
    """The schedule's rate; after a warm start it ramps up again (Adam's moments start from zero again)."""
    if rewarm is not None and step - rewarm < warmup:
        lr = lr * (step - rewarm + 1) / warmup
    for group in opt.param_groups:
        group["lr"] = lr


def _save_state(path: Path, unet, ema, opt, g: torch.Generator, step: int, rewarm: int | None) -> None:
    """Everything a --resume needs, written atomically (a kill mid-write keeps the previous state)."""
    state = {"model": unet.state_dict(), "ema": ema.state_dict(), "opt": opt.state_dict(), "rng": g.get_state()}
    atomic_save({**state, "step": step, "warm_start_from_step": rewarm}, path)


def _report(loss_csv, step: int, losses: list[float], lr: float, elapsed: float, steps_per_s: float) -> None:
    """One row of ddpm_loss.csv (mean of the last 50 steps) and one log line."""
    loss_csv.write(f"{step},{np.mean(losses[-50:]):.6f},{lr:.3e},{elapsed:.0f}\n")
    loss_csv.flush()
    log.info(
        "step %d loss %.4f (mean of last 100: %.4f) lr %.2e %.1f steps/min",
        step,
        losses[-1],
        np.mean(losses[-100:]),
        lr,
        60 * steps_per_s,
    )


def train_ddpm(
    out_dir: str | Path,
    work_dir: str | Path,
    *,
    steps: int = 6000,
    batch_size: int = 64,
    lr: float = 5e-4,
    warmup: int = 200,
    ema_decay: float = 0.999,
    n_images: int = 50_000,
    save_every_min: float = 5.0,
    export_every_min: float = 15.0,
    max_minutes: float | None = None,
    seed: int = 0,
    threads: int = 2,
    resume: bool = False,
    init_from: str | Path | None = None,
) -> Path:
    """Train (or with ``resume`` continue) the DDPM; the EMA weights are exported to ``out_dir`` every
    ``export_every_min`` minutes and at the end. ``max_minutes`` is the budget of this invocation (wall clock); the
    learning rate follows a cosine that ends with the budget or at ``steps``, whichever comes first. ``init_from`` (a
    fresh run only) warm-starts model and EMA from an exported folder (e.g. the shipped assets/synthfaces/ddpm) at its
    recorded step, with a fresh optimiser and a new warm-up: training continues when the resumable state is gone."""
    torch.set_num_threads(threads)
    out_dir, work_dir = Path(out_dir), Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    state_path = work_dir / "ddpm_state.pt"
    if state_path.exists() and not resume:
        raise FileExistsError(f"{state_path} exists: pass --resume to continue it, or delete it to start afresh")
    a = alphas_cumprod(make_betas("linear")).float()
    unet, ema, opt = _models(lr)
    g = torch.Generator().manual_seed(seed)
    losses: list[float] = []
    step, rewarm = _start(unet, ema, opt, g, state_path, init_from, warmup)
    log.info("rendering %d training faces", n_images)
    data = training_images(n_images)
    n_params = sum(p.numel() for p in unet.parameters())
    log.info("UNet2DModel %.2fM params; %d steps at batch %d", n_params / 1e6, steps, batch_size)
    t_start = t_save = t_export = time.time()
    loss_csv = open(work_dir / "ddpm_loss.csv", "a")
    step0 = step

    settings = {"steps": steps, "batch_size": batch_size, "lr": lr, "ema_decay": ema_decay, "n_images": n_images}

    def meta():  # the weights' lineage (warm_start_from_step None: trained from scratch)
        return _lineage(step, settings, n_params, losses, rewarm)

    def save():
        _save_state(state_path, unet, ema, opt, g, step, rewarm)

    unet.train()
    while step < steps:
        time_frac = (time.time() - t_start) / (60 * max_minutes) if max_minutes else 0.0
        _set_lr(opt, _lr(step, steps, lr, warmup, time_frac), step, rewarm, warmup)
        losses.append(_step(unet, ema, opt, g, data, a, batch_size, min(ema_decay, (1 + step) / (10 + step))))
        step += 1
        now = time.time()
        if step % 50 == 0:
            _report(loss_csv, step, losses, opt.param_groups[0]["lr"], now - t_start, (step - step0) / (now - t_start))
        if now - t_save > save_every_min * 60:
            save()
            t_save = now
        if now - t_export > export_every_min * 60:
            export(ema.state_dict(), out_dir, meta())
            t_export = now
            log.info("exported EMA snapshot at step %d -> %s", step, out_dir)
        if max_minutes is not None and now - t_start > max_minutes * 60:
            log.info("time budget reached at step %d", step)
            break
    save()
    loss_csv.close()
    export(ema.state_dict(), out_dir, meta())
    log.info("done: step %d, exported -> %s", step, out_dir)
    return out_dir


@torch.no_grad()
def sample(
    backbone,
    a: torch.Tensor,
    n: int,
    *,
    steps: int = 100,
    eta: float = 1.0,
    clip_x0: bool = True,
    seed: int = 0,
    size: int = 32,
) -> torch.Tensor:
    """Faces from pure noise with the DDIM/DDPM family sampler: ``eta`` 0 is deterministic DDIM, 1 the DDPM posterior
    noise; ``clip_x0`` clamps the predicted clean image to [-1, 1] at every step (what makes this small model's samples
    clean: its noise predictions at high t are imprecise). Official (linspace) timesteps from 999."""
    from ..ddim import ddim_walk
    from ..plan import generation_pairs
    from ..schedules import timesteps

    g = torch.Generator().manual_seed(seed)
    x = torch.randn((n, 3, size, size), generator=g)
    x = ddim_walk(
        backbone,
        x,
        generation_pairs(timesteps(steps)),
        a,
        eta=eta,
        clip_x0=clip_x0,
        noise=lambda x_t, t: torch.randn(x_t.shape, generator=g),
    )
    return x.clamp(-1, 1)
