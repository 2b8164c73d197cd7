"""Measure the editing-strength and quality-deficiency curves of a backbone on a folder of images; print t_edit/t_boost.

    python experiments/interval.py --arch celeba_hq --images data/celeba_hq/test --n-images 100 \
        --distance lpips --lpips-weights ~/weights/alexnet-owt-7be5be79.pth --out outputs/interval/celeba_hq
    python experiments/interval.py --tiny --images some/folder --distance rmse      # offline smoke run

Writes <out>/interval_curves.csv and <out>/interval_curves.png. Put the printed values into a
conf/plan/*.yaml (their interval, source: fixed), or use source: measured with the CSV.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]

from asyrp.interval import (  # noqa: E402
    DEFAULT_THRESHOLDS,
    NoCrossingError,
    choose_t_boost,
    choose_t_edit,
    make_distance,
    measure_curves,
)
from asyrp import build  # noqa: E402
from asyrp.data.images import read_images  # noqa: E402
from asyrp.config import compose, plain  # noqa: E402


def arch_config(args) -> dict:
    """The arch of the command line (--tiny: tiny_ddpm, random weights, at --image-size)."""
    if args.tiny:  # random weights (seeded); the image size follows --image-size
        torch.manual_seed(0)
        return plain(compose("train", ["arch=tiny_ddpm", f"arch.config.image_size={args.image_size or 16}"]).arch)
    arch = plain(compose("train", [f"arch={args.arch}"]).arch)
    if args.checkpoint:
        arch["checkpoint"] = args.checkpoint
    return arch


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--arch", help="conf/arch/<name>.yaml")
    src.add_argument("--tiny", action="store_true", help="conf/arch/tiny_ddpm with random weights (smoke test)")
    ap.add_argument("--checkpoint", help="override the arch's checkpoint path")
    ap.add_argument("--images", type=Path, required=True, help="folder of images")
    ap.add_argument("--n-images", type=int, default=100)
    ap.add_argument("--image-size", type=int, default=None, help="default: the backbone's")
    ap.add_argument("--distance", choices=["lpips", "rmse"], default="lpips")
    ap.add_argument("--lpips-net", default="alex", choices=["alex", "vgg", "squeeze"])
    ap.add_argument("--lpips-weights", help="torchvision ImageNet weights file of the LPIPS net (never downloaded)")
    ap.add_argument("--process", choices=["forward", "inversion"], default="forward")
    ap.add_argument("--stride", type=int, default=1, help="measure every stride-th timestep")
    ap.add_argument("--t0", type=int, default=999)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--edit-threshold", type=float, default=None, help="default: 0.33 (lpips) / 0.35 (rmse)")
    ap.add_argument("--boost-threshold", type=float, default=None, help="default: 1.2 (lpips) / 0.5 (rmse)")
    ap.add_argument("--text-cosine", type=float, default=1.0, help="CLIP cosine of source/target texts")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--out", type=Path, default=Path("outputs/interval"))
    args = ap.parse_args(argv)

    arch = arch_config(args)
    backbone = build.backbone(arch, device=args.device)
    size = args.image_size or backbone.image_size
    x0 = read_images(args.images, size, args.n_images, what="--images").to(args.device)
    a = build.alpha_bar(arch).to(args.device)
    kw = {"net": args.lpips_net, "backbone_weights": args.lpips_weights} if args.distance == "lpips" else {}
    distance = make_distance(args.distance, **kw).to(args.device)

    curves = measure_curves(backbone, x0, a=a, distance=distance, stride=args.stride, t0=args.t0,
                            process=args.process, seed=args.seed, batch_size=args.batch_size)
    edit_th = args.edit_threshold if args.edit_threshold is not None else DEFAULT_THRESHOLDS[args.distance]["edit"]
    boost_th = args.boost_threshold if args.boost_threshold is not None else DEFAULT_THRESHOLDS[args.distance]["boost"]
    csv_path = curves.save_csv(args.out / "interval_curves.csv")
    status = 0
    try:
        t_edit = choose_t_edit(curves, edit_th, args.text_cosine)
    except NoCrossingError as e:
        print(f"t_edit: {e}", file=sys.stderr)
        t_edit, status = None, 1
    try:
        t_boost = choose_t_boost(curves, boost_th)
    except NoCrossingError as e:
        print(f"t_boost: {e}", file=sys.stderr)
        t_boost, status = None, 1
    png = curves.plot(args.out / "interval_curves.png", t_edit=t_edit, t_boost=t_boost,
                      edit_threshold=edit_th * args.text_cosine, boost_threshold=boost_th)
    print(f"{len(x0)} images, distance {args.distance}, x_t from {args.process}, every {args.stride} timestep(s)")
    print(f"t_edit = {t_edit}   (first t with {args.distance}(x, P_t) >= {edit_th} * {args.text_cosine})")
    print(f"t_boost = {t_boost}   (first t with {args.distance}(x, x_t) >= {boost_th})")
    print(f"curves: {csv_path}  plot: {png}")
    return status


if __name__ == "__main__":
    raise SystemExit(main())
