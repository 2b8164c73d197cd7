"""Asyrp's CLIP-trained h-functions next to the directions discover.py finds, on one backbone, one set of held-out
faces and one judge (the synthfaces oracle): docs/results.md, "Directions without CLIP".

For one attribute, every row is an h-function file (Asyrp implicit / global: train.py's hfunction.pt) or a
discover.py run folder (pca / jacobian: the direction whose oracle labels, made on the discovery images, move the
attribute most, with its sign; mean_diff / boundary: their one direction). The strength of a discovered row is chosen on a
selection split (faces of the labelled split without the attribute), by success x preserved; an Asyrp row edits at
its recipe's strength (stored in its file). The held-out test faces are edited once, at that strength, and judged: success, preserved (oracle, edit vs source), PSNR of the edit
to the unedited reconstruction (same inversion, same seeds), seconds and network passes per edit (from the cached
inversion), and what obtaining the direction cost.

    python experiments/compare_directions.py --attribute synthfaces_glasses --test data/synthfaces_glasses/test \
        --row asyrp_implicit=outputs/cmp/train/glasses_delta_block/checkpoints/hfunction.pt \
        --row pca=outputs/cmp/discover/pca_other --out outputs/cmp/results/glasses.json
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import time
from pathlib import Path

import torch

log = logging.getLogger("compare_directions")
ROOT = Path(__file__).resolve().parents[1]
# strengths tried on the selection faces, per method (directions are in units of h's spread or class separation);
# Asyrp rows edit at the strength their file stores (what edit.py uses by default: the recipe's)
MAGNITUDES = {
    "mean_diff": [0.5, 1.0, 1.5],
    "boundary": [0.5, 1.0, 1.5],
    "pca": [1.0, 2.0, 3.0],
    "jacobian": [1.0, 2.0, 3.0],
}


def parse_args(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--attribute", required=True, help="conf/attribute/<name>.yaml (its oracle_target is judged)")
    ap.add_argument("--test", required=True, help="held-out faces without the attribute (64)")
    ap.add_argument("--n-test", type=int, default=64)
    ap.add_argument("--select", default="data/synthfaces/labelled", help="labelled folder the strength is chosen on")
    ap.add_argument("--n-select", type=int, default=12)
    ap.add_argument("--row", action="append", default=[], metavar="NAME=PATH", help="h-function file or discover run")
    ap.add_argument(
        "--train-log",
        action="append",
        default=[],
        metavar="NAME=LOG",
        help="/usr/bin/time -v log of the train.py run behind a row (its wall time)",
    )
    ap.add_argument(
        "--select-asyrp",
        action="store_true",
        help="choose the strength of Asyrp rows on the selection faces too (0.5, 1, 1.5)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, required=True)
    return ap.parse_args(argv)


def pick_direction(run: Path, target: str) -> tuple[Path, float, dict]:
    """(file, sign, summary) of a discover run: its one direction, or the labelled one that moves ``target`` most."""
    from asyrp.directions import target_gain

    summary = json.loads((run / "directions.json").read_text())
    files = [run / r["file"] for r in summary["directions"]]
    if len(files) == 1:
        return files[0], 1.0, summary
    best = (float("-inf"), None, 1.0)
    for f in files:
        labels = torch.load(f, weights_only=True)["direction"]["labels"]
        gain, s = target_gain(labels, target)
        if gain > best[0]:
            best = (gain, f, 1.0 if s > 0 else -1.0)
    log.info(
        "%s: best-matching direction for %s: %s (sign %+g, gain %.3f on the discovery images)",
        run,
        target,
        best[1].name,
        best[2],
        best[0],
    )
    return best[1], best[2], summary


@torch.no_grad()
def run_edit(backbone, a, x_T, hfunc, settings, strengths, seeds):
    from asyrp.plan import EditPlan
    from asyrp.samplers import edit

    plan = EditPlan(
        n_inv=settings["n_inv"],
        n_gen=settings["n_gen"],
        t0=settings["t0"],
        t_edit=settings["t_edit"],
        t_boost=settings["t_boost"] or 0,
        mode=settings.get("mode", "asyrp"),
    )
    return edit(backbone, None, hfunc, a=a, plan=plan, strength=strengths, seeds=seeds, x_T=x_T).x_edit


def choose_strength(ctx, hfunc, settings, candidates) -> tuple[float, list]:
    """The candidate with the best success x preserved on the selection faces (never the test faces)."""
    from asyrp.synthfaces.judge import judge_pairs

    x_src, x_T = ctx["select"], invert(ctx, ctx["select"], settings)
    xs = run_edit(ctx["backbone"], ctx["a"], x_T, hfunc, settings, candidates, ctx["seeds"][: len(x_src)])
    scores = []
    for s, x in zip(candidates, xs):
        r = judge_pairs(ctx["oracle"], x_src, x, ctx["target"])
        scores.append({"strength": s, "success": r["success"], "preserved": r["preserved"]})
    best = max(scores, key=lambda r: r["success"] * r["preserved"])
    return best["strength"], scores


def invert(ctx, x0, settings) -> torch.Tensor:
    from asyrp.ddim import ddim_invert
    from asyrp.schedules import timesteps

    key = (id(x0), settings["n_inv"], settings["t0"])
    if key not in ctx["inversions"]:
        ctx["inversions"][key] = ddim_invert(
            ctx["backbone"], x0, timesteps(settings["n_inv"], settings["t0"]), ctx["a"]
        )
    return ctx["inversions"][key]


def held_out(ctx, hfunc, settings, strength) -> dict:
    """Edit the test faces once at ``strength`` (timed, passes counted) and judge them."""
    from asyrp.metrics import PSNRPreservation
    from asyrp.perf import PassCounter
    from asyrp.synthfaces.judge import judge_pairs

    x_src, x_T = ctx["test"], invert(ctx, ctx["test"], settings)
    seeds = ctx["seeds"][: len(x_src)]
    rkey = (settings["n_inv"], settings["t0"], settings["t_boost"])
    if rkey not in ctx["recon"]:
        ctx["recon"][rkey] = run_edit(ctx["backbone"], ctx["a"], x_T, None, settings, 0.0, seeds)
    with PassCounter(ctx["backbone"]) as c:
        t = time.perf_counter()
        x = run_edit(ctx["backbone"], ctx["a"], x_T, hfunc, settings, float(strength), seeds)
        seconds = time.perf_counter() - t
    r = judge_pairs(ctx["oracle"], x_src, x, ctx["target"])
    psnr = PSNRPreservation()
    psnr.update(ctx["recon"][rkey], x)
    n = len(x_src)
    return {
        "success": r["success"],
        "preserved": r["preserved"],
        "psnr_to_recon": float(psnr.compute()),
        "seconds_per_edit": seconds / n,
        "passes_per_edit": (c.rows("encode") + c.rows("decode")) / 2 / n,
        "x": x,
    }


def train_cost(log_path: str | None, settings: dict, n_train: int, epochs: int) -> dict:
    """Wall time of a train.py run (from its /usr/bin/time log) and its passes by formula (cache + epochs)."""
    from asyrp.schedules import timesteps

    steps = [t for t in timesteps(settings["n_gen"], settings["t0"]) if t >= settings["t_edit"]]
    passes = n_train * (settings["n_inv"] + settings["n_gen"]) + epochs * n_train * len(steps) * 1.5
    out = {"passes": passes, "passes_by": "formula: cache n_train*(n_inv+n_gen) + epochs*n_train*steps*(enc+2 dec)/2"}
    if log_path:
        m = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", Path(log_path).read_text())
        if m:
            parts = [float(p) for p in m.group(1).split(":")]
            out["seconds"] = sum(p * 60**i for i, p in enumerate(reversed(parts)))
    return out


def row(ctx, name: str, path: Path, train_logs: dict) -> dict:
    from asyrp import build

    sign, summary = 1.0, None
    if path.is_dir():
        path, sign, summary = pick_direction(path, ctx["target"])
    hfunc, meta = build.trained_hfunction(path, ctx["backbone"], "synthfaces")
    settings = {k: meta["edit"][k] for k in ("n_inv", "n_gen", "t0", "t_edit", "t_boost")}
    settings["mode"] = meta["edit"].get("mode") or "asyrp"
    method = (meta.get("direction") or {}).get("method", "asyrp")
    if method in MAGNITUDES or ctx["select_asyrp"]:
        mags = MAGNITUDES.get(method, [0.5, 1.0, 1.5])
        strength, sel = choose_strength(ctx, hfunc, settings, [sign * m for m in mags])
    else:
        strength, sel = float(meta["edit"].get("strength") or 1.0), "recipe"
    res = held_out(ctx, hfunc, settings, strength)
    if summary is not None:
        c = summary["cost"]
        # inversions found in the cache are counted as what building them costs (n_inv + n_gen per image), not 0
        cost = {
            "seconds": c["seconds"],
            "passes": sum(c["passes"].values()) + c["inversions_cached"] * (settings["n_inv"] + settings["n_gen"]),
            **{k: summary["cost"][k] for k in ("jvp_rows", "vjp_rows", "inversions_cached") if k in summary["cost"]},
            "images": summary["cost"]["images"],
        }
    else:
        cost = train_cost(train_logs.get(name), settings, 64, 4)  # the recipes: 64 training faces, n_iter 4
    log.info(
        "%s: strength %g -> success %.3f preserved %.3f psnr %.2f",
        name,
        strength,
        res["success"],
        res["preserved"],
        res["psnr_to_recon"],
    )
    return {
        "row": name,
        "file": str(path),
        "method": method,
        "direction": (meta.get("direction") or {}).get("name"),
        "label": (meta.get("direction") or {}).get("label"),
        "strength": strength,
        "selection": sel,
        "settings": settings,
        "cost": cost,
        **{k: v for k, v in res.items() if k != "x"},
    }


def main(argv=None) -> None:
    from asyrp import build
    from asyrp.config import compose
    from asyrp.data.images import read_image_files, read_images
    from asyrp.synthfaces.oracle import load_oracle

    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    torch.manual_seed(args.seed)
    cfg = compose("train", ["arch=synthfaces", f"attribute={args.attribute}"])
    target = str(build.attribute(cfg.attribute)["oracle_target"])
    head, value = target.split("=", 1)
    labels = json.loads((Path(args.select) / "attributes.json").read_text())
    sel_files = [Path(args.select) / n for n in sorted(labels) if str(labels[n][head]) != value][: args.n_select]
    ctx = {
        "backbone": build.backbone(cfg.arch),
        "a": build.alpha_bar(cfg.arch),
        "oracle": load_oracle(),
        "target": target,
        "test": read_images(args.test, 32, args.n_test),
        "select": read_image_files(sel_files, 32),
        "seeds": [args.seed + i for i in range(max(args.n_test, args.n_select))],
        "inversions": {},
        "recon": {},
        "select_asyrp": args.select_asyrp,
    }
    train_logs = dict(item.split("=", 1) for item in args.train_log)
    rows = []
    for item in args.row:
        name, path = item.split("=", 1)
        rows.append(row(ctx, name, Path(path), train_logs))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "attribute": args.attribute,
                "target": target,
                "test": args.test,
                "n_test": len(ctx["test"]),
                "select": [f.name for f in sel_files],
                "rows": rows,
            },
            indent=1,
        )
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
