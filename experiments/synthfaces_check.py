"""Measure the shipped synthfaces models: ``python experiments/synthfaces_check.py [--quick]``.

Reports (JSON + sample grids under outputs/synthfaces_check/):
- oracle: held-out accuracy per head on fresh clean renders (dataset seed 7), and on mildly degraded renders (blur +
  noise, a stand-in for DDPM artefacts);
- clip: zero-shot accuracy per attribute (dataset seed 8, prompts of asyrp.synthfaces.clip.zero_shot_prompts);
- ddpm samples from pure noise, per sampler: the oracle's attribute frequencies vs the training data's ground-truth
  frequencies (max gap in percentage points per head), and the "valid face" rate = fraction of samples on which the
  oracle's softmax confidence exceeds 0.9 on EVERY head (7 heads) -- a sample the oracle cannot read confidently
  counts as invalid;
- ddpm DDIM inversion -> regeneration (deterministic, 40 steps, official timesteps, no clipping) PSNR on held-out
  faces (dataset seed 3, never seen in training), on the [0, 1] pixel scale.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]


def _save_table(x: torch.Tensor, nrow: int, path: Path, title: str) -> None:
    """Images in rows of ``nrow`` as one readable grid (asyrp.grid: cells upscaled to >= 128 px)."""
    from asyrp.grid import save_grid, table_grid

    cells = [list(x[i : i + nrow]) for i in range(0, x.shape[0], nrow)]
    save_grid(path, table_grid(cells, title=title))


def check_oracle(oracle, n: int) -> dict:
    from asyrp.synthfaces.oracle import accuracy, labels_tensor, to_tensor
    from asyrp.synthfaces.render import HEADS, render_array

    clean = accuracy(oracle, seed=7, n=n)
    arr, faces = render_array(7, 0, n)
    x = to_tensor(arr)
    g = torch.Generator().manual_seed(0)
    blur = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, 1)
    x = (0.5 * x + 0.5 * blur + 0.08 * torch.randn(x.shape, generator=g)).clamp(-1, 1)
    pred, labs = oracle.judge(x), labels_tensor(faces)
    degraded = {k: float((pred[k] == labs[k]).float().mean()) for k in HEADS}
    return {"n": n, "clean": clean, "degraded_blur_noise": degraded, "clean_mean": float(np.mean(list(clean.values())))}


def check_clip(n: int) -> dict:
    from asyrp import build
    from asyrp.config import compose
    from asyrp.synthfaces.clip import zero_shot_accuracy

    clip = build.clip(compose("train", ["clip=synthfaces"]).clip)
    return {"n": n, "zero_shot": zero_shot_accuracy(clip, seed=8, n=n)}


def data_frequencies(n: int = 50_000) -> dict[str, dict[str, float]]:
    """Ground-truth class frequencies of the DDPM's training faces (dataset seed 0)."""
    from asyrp.synthfaces.ddpm import TRAIN_SEED
    from asyrp.synthfaces.render import HEADS, sample_face

    counts = {k: Counter() for k in HEADS}
    for i in range(n):
        f = sample_face(TRAIN_SEED, i)
        for k in HEADS:
            counts[k][str(getattr(f, k))] += 1
    return {k: {str(c): counts[k][str(c)] / n for c in v} for k, v in HEADS.items()}


def judge_samples(oracle, x: torch.Tensor, data_freq: dict, threshold: float = 0.9) -> dict:
    from asyrp.synthfaces.render import HEADS

    pred = oracle.judge(x)
    freq = {k: {str(c): float((pred[k] == i).float().mean()) for i, c in enumerate(v)} for k, v in HEADS.items()}
    gap = {k: 100 * max(abs(freq[k][c] - data_freq[k][c]) for c in freq[k]) for k in HEADS}
    return {
        "valid_rate": float((pred["confidence"] > threshold).float().mean()),
        "valid_threshold": threshold,
        "mean_min_confidence": float(pred["confidence"].mean()),
        "frequencies": freq,
        "max_gap_points": gap,
        "worst_gap_points": max(gap.values()),
    }


@torch.no_grad()
def check_inversion(bb, a, n: int, steps: int) -> dict:
    from asyrp.ddim import ddim_generate, ddim_invert
    from asyrp.schedules import timesteps
    from asyrp.synthfaces.oracle import to_tensor
    from asyrp.synthfaces.render import render_array

    x0 = to_tensor(render_array(3, 0, n)[0])
    seq = timesteps(steps)
    t0 = time.time()
    x_rec = ddim_generate(bb, ddim_invert(bb, x0, seq, a), seq, a, eta=0.0)
    mse = (((x_rec.clamp(-1, 1) - x0) / 2) ** 2).flatten(1).mean(1)
    psnr = 10 * torch.log10(1 / mse)
    return (
        {
            "n": n,
            "steps": steps,
            "psnr_mean": float(psnr.mean()),
            "psnr_min": float(psnr.min()),
            "psnr_median": float(psnr.median()),
            "seconds": round(time.time() - t0, 1),
        },
        x0,
        x_rec,
    )


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", type=Path, default=ROOT / "outputs" / "synthfaces_check")
    p.add_argument("--ddpm", type=Path, default=ROOT / "assets" / "synthfaces" / "ddpm")
    p.add_argument("--n-samples", type=int, default=256)
    p.add_argument(
        "--samplers",
        default="eta1_clip_100,eta0_clip_50,eta1_clip_250",
        help="comma list of eta<eta>_<clip|noclip>_<steps>",
    )
    p.add_argument("--n-inv", type=int, default=64)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--quick", action="store_true", help="64 samples, one sampler, 16 inversions")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.quick:
        args.n_samples, args.samplers, args.n_inv = 64, "eta1_clip_100", 16
    args.out.mkdir(parents=True, exist_ok=True)

    from asyrp import build
    from asyrp.config import compose, plain
    from asyrp.synthfaces.ddpm import sample
    from asyrp.synthfaces.oracle import load_oracle

    report: dict = {"ddpm_dir": str(args.ddpm)}
    meta = args.ddpm / "training.json"
    if meta.is_file():
        report["ddpm_training"] = json.loads(meta.read_text())
    oracle = load_oracle()
    report["oracle"] = check_oracle(oracle, 1000)
    print("oracle", json.dumps(report["oracle"]), flush=True)
    report["clip"] = check_clip(500)
    print("clip", json.dumps(report["clip"]), flush=True)

    arch = {**plain(compose("train", ["arch=synthfaces"]).arch), "checkpoint": str(args.ddpm)}
    bb = build.backbone(arch)
    a = build.alpha_bar(arch).float()
    report["inversion"], x0, x_rec = check_inversion(bb, a, args.n_inv, 40)
    print("inversion", json.dumps(report["inversion"]), flush=True)
    from asyrp.grid import columns_grid, save_grid

    save_grid(
        args.out / "inversion.png",
        columns_grid(
            [("held-out face", x0[:16]), ("inverted + regenerated", x_rec[:16])],
            [f"face {i}" for i in range(16)],
            f"DDIM inversion -> regeneration ({args.n_inv} / 40 steps, deterministic): PSNR "
            f"{report['inversion']['psnr_mean']:.1f} dB (mean)",
            blocks=4,
        ),
    )

    freq = data_frequencies()
    report["data_frequencies"] = freq
    report["samples"] = {}
    for spec in [s for s in args.samplers.split(",") if s]:
        eta_s, clip_s, steps_s = spec.split("_")
        eta, clip_x0, steps = float(eta_s[3:]), clip_s == "clip", int(steps_s)
        t0 = time.time()
        x = torch.cat(
            [
                sample(bb, a, min(64, args.n_samples - i), steps=steps, eta=eta, clip_x0=clip_x0, seed=i)
                for i in range(0, args.n_samples, 64)
            ]
        )
        res = {
            "eta": eta,
            "clip_x0": clip_x0,
            "steps": steps,
            "n": args.n_samples,
            "seconds": round(time.time() - t0, 1),
            **judge_samples(oracle, x, freq),
        }
        report["samples"][spec] = res
        print(spec, json.dumps({k: v for k, v in res.items() if k != "frequencies"}), flush=True)
        _save_table(
            x[:256],
            16,
            args.out / f"samples_{spec}.png",
            f"DDPM samples from x_T ~ N(0, I), sampler {spec}: valid rate {res.get('valid_rate', float('nan')):.2f}",
        )
    if report["samples"]:
        best = max(report["samples"], key=lambda s: report["samples"][s]["valid_rate"])
        report["best_sampler"] = best
        (args.out / "samples.png").write_bytes((args.out / f"samples_{best}.png").read_bytes())
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    print("wrote", args.out / "report.json")


if __name__ == "__main__":
    main()
