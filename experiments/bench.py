"""Cost of one Asyrp generation step, measured side by side in one run.

Asyrp needs two noise predictions per step that share everything below the bottleneck: eps (from h, for D_t) and
eps_edit (from h + delta_h, for P_t). Three ways to get them:
  naive      two full network passes (encoder run twice);
  split      one encode, then two sequential decodes;
  batched    one encode, then ONE decode of cat(h, h + delta_h) (what asyrp.samplers does).
Prints the best-of-N wall time of each and its speed-up over `naive`. Random weights: only the architecture matters for cost.

    python experiments/bench.py --arch tiny_ddpm --batch 4
    python experiments/bench.py --arch celeba_hq --batch 1 --repeats 3   # full-size 256px DDPM (slow on CPU)
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from omegaconf import OmegaConf

from asyrp.backbones import load_backbone

CONF = Path(__file__).resolve().parents[1] / "conf" / "arch"


def _variants(bb, x, t, delta_h):
    def naive():
        # the edit is injected by a second full pass whose bottleneck is replaced
        enc = bb.encode(x, t)
        eps = bb.decode(enc)
        enc2 = bb.encode(x, t)
        return eps, bb.decode(enc2, enc2.h + delta_h)

    def split():
        enc = bb.encode(x, t)
        return bb.decode(enc), bb.decode(enc, enc.h + delta_h)

    def batched():
        enc = bb.encode(x, t)
        out = bb.decode(enc, torch.cat([enc.h, enc.h + delta_h]))
        return out.chunk(2)

    return {"naive": naive, "split": split, "batched": batched}


def _time(fn, repeats: int) -> float:
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", default="tiny_ddpm", help="a conf/arch/<name>.yaml (weights are random)")
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    arch = OmegaConf.load(CONF / f"{args.arch}.yaml")
    bb = load_backbone(arch.family, OmegaConf.to_container(arch.config, resolve=True), None)
    size = bb.image_size
    x = torch.randn(args.batch, bb.in_channels, size, size)
    t = torch.full((args.batch,), 500.0)
    delta_h = 0.1 * torch.randn(args.batch, *bb.h_shape)

    with torch.no_grad():
        fns = _variants(bb, x, t, delta_h)
        ref = fns["naive"]()
        for name, fn in fns.items():
            got = fn()
            err = max((a - b).abs().max().item() for a, b in zip(ref, got))
            assert err < 1e-4, f"{name} disagrees with naive by {err}"
        times = {name: _time(fn, args.repeats) for name, fn in fns.items()}

    n_params = sum(p.numel() for p in bb.parameters())
    print(f"arch={args.arch} params={n_params / 1e6:.2f}M batch={args.batch} image={size}px threads={args.threads}")
    print(f"{'variant':<10}{'seconds/step':>14}{'vs naive':>10}")
    for name, sec in times.items():
        print(f"{name:<10}{sec:>14.4f}{times['naive'] / sec:>9.2f}x")


if __name__ == "__main__":
    main()
