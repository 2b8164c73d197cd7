"""Editing-strength d(x, P_t) and quality-deficiency d(x, x_t) curves of a backbone, the t_edit / t_boost they
give (paper Sec. 4), per attribute (t_edit depends on the CLIP cosine of the attribute's texts).

    python experiments/curves.py                                   # synthfaces, RMSE distance (offline)
    python experiments/curves.py --distance lpips --lpips-weights ~/w/alexnet-owt-7be5be79.pth
    python experiments/curves.py --arch tiny_ddpm --smoke

Thin wrapper over asyrp.interval.measure_curves (as experiments/interval.py) that also compares the measured
interval with the configured one and lists t_edit per attribute. Writes curves.md (summary table, then the curve
table), curves.csv (summary), interval_curves.csv (the curves) and curves.png.
"""
from __future__ import annotations


from asyrp import experiment as C
from asyrp.synthfaces.oracle import find_oracle

COLUMNS = ["quantity", "value", "detail"]
STRIDES = {"full": 10, "quick": 50, "smoke": 333}


def main(argv=None) -> int:
    ap = C.base_parser("curves", __doc__)
    ap.add_argument("--distance", choices=["rmse", "lpips"], default="rmse")
    ap.add_argument("--lpips-weights", default=None, help="torchvision weights of the LPIPS net (never downloaded)")
    ap.add_argument("--lpips-net", default="alex")
    ap.add_argument("--process", choices=["forward", "inversion"], default="forward")
    ap.add_argument("--stride", type=int, default=None, help="every stride-th t (default by run size)")
    ap.add_argument("--attributes", default=None,
                    help="comma list of attribute configs for per-attribute t_edit (default: all synthfaces_* for "
                         "synthfaces, else --attribute)")
    args = ap.parse_args(argv)
    w = C.setup(args, find_oracle)

    from asyrp.interval import DEFAULT_THRESHOLDS, NoCrossingError, choose_t_boost, choose_t_edit, make_distance, measure_curves

    kw = {"net": args.lpips_net, "backbone_weights": args.lpips_weights} if args.distance == "lpips" else {}
    dist = make_distance(args.distance, **kw).to(w.device)
    stride = args.stride or STRIDES[w.run_size]
    curves = measure_curves(w.backbone, w.x, a=w.a, distance=dist, stride=stride, process=args.process,
                            seed=args.seed, batch_size=64)
    curves.save_csv(w.out / "interval_curves.csv")
    th = DEFAULT_THRESHOLDS[args.distance]

    def safe(fn, *a):
        try:
            return fn(*a)
        except NoCrossingError:
            return float("nan")

    t_edit = safe(choose_t_edit, curves, th["edit"], 1.0)
    t_boost = safe(choose_t_boost, curves, th["boost"])
    rows = [
        {"quantity": "t_edit (text cosine 1)", "value": t_edit,
         "detail": f"first t with {args.distance}(x, P_t) >= {th['edit']}; configured t_edit = {w.t_edit}"},
        {"quantity": "t_boost", "value": t_boost,
         "detail": f"first t with {args.distance}(x, x_t) >= {th['boost']}; configured t_boost = {w.t_boost}"},
        {"quantity": "strength d(x, P_t) at t = 0 / 500 / 999", "value": curves.strength[0],
         "detail": " / ".join(f"{_at(curves.t, curves.strength, t):.3g}" for t in (0, 500, 999))},
        {"quantity": "deficiency d(x, x_t) at t = 0 / 500 / 999", "value": curves.deficiency[0],
         "detail": " / ".join(f"{_at(curves.t, curves.deficiency, t):.3g}" for t in (0, 500, 999))},
        {"quantity": "strength curve monotone (fraction of rising steps)",
         "value": sum(b >= a for a, b in zip(curves.strength, curves.strength[1:])) / max(len(curves.t) - 1, 1),
         "detail": f"{len(curves.t)} timesteps, stride {stride}"},
    ]
    if args.attributes:
        attrs = [a.strip() for a in args.attributes.split(",") if a.strip()]
    elif args.arch == "synthfaces":
        attrs = sorted(p.stem for p in (C.ROOT / "conf" / "attribute").glob("synthfaces_*.yaml"))
    else:
        attrs = [args.attribute]
    for name in attrs:
        at = w.attribute(name)
        cos = w.clip.text_cosine(at["source"], at["target"])
        rows.append({"quantity": f"t_edit for {at['config']}", "value": safe(choose_t_edit, curves, th["edit"], cos),
                     "detail": f"CLIP text cosine {cos:.3f} -> threshold {th['edit'] * cos:.3g}"})
    curves.plot(w.out / "curves.png", t_edit=None if t_edit != t_edit else int(t_edit),
                t_boost=None if t_boost != t_boost else int(t_boost), edit_threshold=th["edit"],
                boost_threshold=th["boost"])
    notes = [f"distance {args.distance} (thresholds edit {th['edit']}, boost {th['boost']}; the paper's LPIPS "
             f"thresholds are 0.33 / 1.2), x_t from the {args.process} process"]
    md = C.write_table(w, "curves", rows, COLUMNS, title=f"Editing interval curves: {w.arch_cfg.get('name')}", notes=notes)
    lines = ["", "## Curves", "", "| t | strength | strength_std | deficiency | deficiency_std |", "|---|---|---|---|---|"]
    for i, t in enumerate(curves.t):
        lines.append(f"| {t} | {curves.strength[i]:.4g} | {curves.strength_std[i]:.3g} | {curves.deficiency[i]:.4g} | "
                     f"{curves.deficiency_std[i]:.3g} |")
    with open(md, "a") as fh:
        fh.write("\n".join(lines) + "\n")
    return 0


def _at(ts, vs, t):
    return vs[min(range(len(ts)), key=lambda i: abs(ts[i] - t))]


if __name__ == "__main__":
    raise SystemExit(main())
