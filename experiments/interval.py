"""Editing-strength d(x, P_t) and quality-deficiency d(x, x_t) curves of a backbone on a set of images, and the
t_edit / t_boost they give (paper Sec. 4), also per attribute (t_edit depends on the CLIP cosine of its texts).

    python experiments/interval.py                                   # synthfaces test faces, RMSE distance (offline)
    python experiments/interval.py --arch celeba_hq --images data/celeba_hq/test --n-images 100 \
        --distance lpips --lpips-weights ~/weights/alexnet-owt-7be5be79.pth --out outputs/interval/celeba_hq
    python experiments/interval.py --tiny --images some/folder       # offline smoke run (random tiny net)

Writes to --out: interval_curves.csv (the curves; a plan preset's interval with source: measured reads it),
interval_curves.png and curves.png (both curves with the thresholds and the chosen values), curves.md (summary table,
then the curve table) and curves.csv (the summary); prints t_edit and t_boost (put them into a conf/plan/*.yaml's
interval, source: fixed). Exit status 1 if a curve never reaches its threshold. The library part is asyrp.interval.
"""

from __future__ import annotations

import sys

from asyrp import experiment as C
from asyrp.interval import (
    DEFAULT_THRESHOLDS,
    choose_interval,
    choose_t_edit,
    curve_table,
    make_distance,
    measure_curves,
    summary_rows,
)
from asyrp.synthfaces.oracle import find_oracle

COLUMNS = ["quantity", "value", "detail"]
STRIDES = {"full": 10, "quick": 50, "smoke": 333}


def parse_args(argv=None):
    ap = C.base_parser("interval", __doc__)
    ap.add_argument(
        "--tiny",
        action="store_true",
        help="conf/arch/tiny_ddpm with random weights at --image-size, CLIP tiny (smoke test)",
    )
    ap.add_argument("--image-size", type=int, default=None, help="with --tiny: the random net's image size (16)")
    ap.add_argument(
        "--distance",
        choices=["rmse", "lpips"],
        default="rmse",
        help="rmse (offline, default) or the paper's lpips (needs --lpips-weights)",
    )
    ap.add_argument("--lpips-net", default="alex", choices=["alex", "vgg", "squeeze"])
    ap.add_argument(
        "--lpips-weights", default=None, help="torchvision ImageNet weights file of the LPIPS net (never downloaded)"
    )
    ap.add_argument("--process", choices=["forward", "inversion"], default="forward")
    ap.add_argument("--stride", type=int, default=None, help="measure every stride-th t (default by run size: 10)")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--edit-threshold", type=float, default=None, help="default: 0.33 (lpips) / 0.35 (rmse)")
    ap.add_argument("--boost-threshold", type=float, default=None, help="default: 1.2 (lpips) / 0.5 (rmse)")
    ap.add_argument("--text-cosine", type=float, default=1.0, help="CLIP cosine of source/target texts")
    ap.add_argument(
        "--attributes",
        default=None,
        help="comma list of attribute configs for per-attribute t_edit (default: all synthfaces_* for "
        "synthfaces, else --attribute)",
    )
    args = ap.parse_args(argv)
    if args.image_size is not None and not args.tiny:
        ap.error("--image-size sets the random net of --tiny; another arch reads images at its own size")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    overrides = []
    if args.tiny:  # a random tiny DDPM (seeded by --seed) at the size of the smoke images
        args.arch, args.clip = "tiny_ddpm", args.clip or "tiny"
        overrides.append(f"arch.config.image_size={args.image_size or 16}")
    w = C.setup(args, find_oracle, overrides)

    kw = {"net": args.lpips_net, "backbone_weights": args.lpips_weights} if args.distance == "lpips" else {}
    dist = make_distance(args.distance, **kw).to(w.device)
    stride = args.stride or STRIDES[w.run_size]
    curves = measure_curves(
        w.backbone,
        w.x,
        a=w.a,
        distance=dist,
        stride=stride,
        t0=w.t0,
        process=args.process,
        seed=args.seed,
        batch_size=args.batch_size,
    )
    csv_path = curves.save_csv(w.out / "interval_curves.csv")
    th = DEFAULT_THRESHOLDS[args.distance]
    edit_th = th["edit"] if args.edit_threshold is None else args.edit_threshold
    boost_th = th["boost"] if args.boost_threshold is None else args.boost_threshold
    t_edit, t_boost, problems = choose_interval(curves, edit_th, boost_th, args.text_cosine)
    for p in problems:
        print(p, file=sys.stderr)

    rows = summary_rows(
        curves,
        t_edit,
        t_boost,
        edit_threshold=edit_th,
        boost_threshold=boost_th,
        text_cosine=args.text_cosine,
        configured=(w.t_edit, w.t_boost),
        stride=stride,
    )
    rows += attribute_rows(w, args, curves, edit_th)
    for name in ("curves.png", "interval_curves.png"):
        png = curves.plot(
            w.out / name,
            t_edit=t_edit,
            t_boost=t_boost,
            edit_threshold=edit_th * args.text_cosine,
            boost_threshold=boost_th,
        )
    notes = [
        (
            f"distance {args.distance} (thresholds edit {edit_th}, boost {boost_th}; the paper's LPIPS "
            f"thresholds are 0.33 / 1.2), x_t from the {args.process} process"
        )
    ]
    md = C.write_table(
        w, "curves", rows, COLUMNS, title=f"Editing interval curves: {w.arch_cfg.get('name')}", notes=notes
    )
    with open(md, "a") as fh:
        fh.write("\n".join(["", *curve_table(curves)]) + "\n")
    print(f"{len(w.x)} images, distance {args.distance}, x_t from {args.process}, every {stride} timestep(s)")
    print(f"t_edit = {t_edit}   (first t with {args.distance}(x, P_t) >= {edit_th} * {args.text_cosine})")
    print(f"t_boost = {t_boost}   (first t with {args.distance}(x, x_t) >= {boost_th})")
    print(f"curves: {csv_path}  plot: {png}")
    return 1 if problems else 0


def attribute_rows(w, args, curves, edit_th: float) -> list[dict]:
    """t_edit per attribute: the edit threshold scaled by the CLIP cosine of the attribute's texts."""
    if args.attributes:
        names = [a.strip() for a in args.attributes.split(",") if a.strip()]
    elif args.arch == "synthfaces":
        names = sorted(p.stem for p in (C.ROOT / "conf" / "attribute").glob("synthfaces_*.yaml"))
    else:
        names = [args.attribute]
    rows = []
    for name in names:
        at = w.attribute(name)
        cos = w.clip.text_cosine(at["source"], at["target"])
        try:
            t = choose_t_edit(curves, edit_th, cos)
        except ValueError:  # NoCrossingError: the attribute's threshold is never reached
            t = float("nan")
        rows.append(
            {
                "quantity": f"t_edit for {at['config']}",
                "value": t,
                "detail": f"CLIP text cosine {cos:.3f} -> threshold {edit_th * cos:.3g}",
            }
        )
    return rows


if __name__ == "__main__":
    raise SystemExit(main())
