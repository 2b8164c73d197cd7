"""LOCO Edit's x_t edit as a comparison row on synthfaces: region mask, LOCO direction, strength chosen on select/,
reported on test/, judged by the oracle (asyrp.metrics.EditScorer through evaluate.py).

    python -m asyrp.synthfaces.data --out data/synthfaces_glasses --exclude glasses=True --n-select 64
    python experiments/loco.py --attribute synthfaces_glasses --data data/synthfaces_glasses \\
        --out outputs/loco/glasses --strengths 2 4 6 8 -- [discover.py method=loco overrides ...]

Steps (each a command of the entry points, skipped when its output is complete, so a rerun resumes):
1. ``discover.py method=region`` on train/: where CLIP reads the attribute (mask.pt; no oracle);
2. ``discover.py method=loco method.mask=...`` on train/: the LOCO direction (candidate and sign by CLIP's text
   direction), an x-space file edit.py applies once at t;
3. ``edit.py`` on select/ at 0 and every strength, evaluate.py's task (oracle, clip_direction, psnr_rec; in process, as
   ``attribute`` is a config group on its command line); two strengths are chosen on select/: the largest
   min(success - 0.80, preserved - 0.90) (the recipes' rule) and the weakest whose success reaches --success (the
   matched-success comparison of issue 24);
4. ``edit.py`` and evaluate on test/ at 0 and those strengths: the reported rows.
Writes <out>/summary.json and prints one line per split.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from asyrp.config import compose
from asyrp.synthfaces.oracle import find_oracle
from asyrp.tasks.evaluate import evaluate

ROOT = Path(__file__).resolve().parents[1]
METRICS = "[oracle,clip_direction,psnr_rec]"


def run(args: list[str], log: Path) -> None:
    print("$ python", " ".join(args), flush=True)
    with open(log, "w") as fh:
        if subprocess.run([sys.executable, *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"loco: failed: python {' '.join(args)} (log: {log})")


def discover(a, method: str, images: str, n: int, extra: list[str]) -> Path:
    """One discover.py run into <out>/<method> (reused when its summary is there)."""
    out = a.out / method
    done = out / ("region.json" if method == "region" else "directions.json")
    if not done.is_file():
        common = [f"attribute={a.attribute}", f"input_dir={images}", f"n_images={n}", f"cache_dir={a.cache}"]
        hydra = [f"output_dir={out}", f"hydra.run.dir={out}/hydra", "overwrite=true"]
        run(["discover.py", f"method={method}", *common, *hydra, *extra], a.out / f"{method}.log")
    return out


def edit_and_judge(a, ckpt: Path, split: str, strengths: list[float]) -> list[dict]:
    """Edit <data>/<split> at 0 and ``strengths`` with edit.py, score with evaluate.py: its rows (strength > 0)."""
    dst = a.out / split
    sweep = "[" + ",".join(str(s) for s in [0.0, *strengths]) + "]"
    table = dst / "eval" / "evaluation.json"
    if not table.is_file():
        edit = [f"checkpoint={ckpt}", f"input_dir={a.data}/{split}", f"sweep={sweep}", f"cache_dir={a.cache}"]
        run(
            ["edit.py", "arch=synthfaces", *edit, "batch_size=32", "progress=false", f"hydra.run.dir={dst}"],
            a.out / f"{split}_edit.log",
        )
        cfg = compose(
            "evaluate", [f"runs=[{dst / 'edited'}]", f"metrics={METRICS}", "clip=synthfaces"], output_dir=dst / "eval"
        )
        cfg.attribute = a.attribute  # its oracle_target (and texts, for a file that stores none)
        print(
            f"$ python evaluate.py runs=[{dst / 'edited'}] metrics={METRICS} clip=synthfaces (attribute={a.attribute})"
        )
        evaluate(cfg, find_oracle())
    rows = json.loads(table.read_text())
    rows = rows["rows"] if isinstance(rows, dict) else rows
    out = []
    for r in rows:
        s = float(r["strength"])
        if s != 0:
            m = {k: r.get(k) for k in ("n", "success", "preserved", "clip_direction", "psnr_rec")}
            out.append({"split": split, "strength": s, **m, "margin": min(m["success"] - 0.8, m["preserved"] - 0.9)})
    return out


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--attribute", default="synthfaces_glasses", help="a conf/attribute name")
    p.add_argument("--data", required=True, help="folder with train/, select/, test/ (python -m asyrp.synthfaces.data)")
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=None, help="inversion cache folder (default: <out>/cache)")
    p.add_argument("--strengths", type=float, nargs="+", default=[2.0, 4.0, 6.0, 8.0])
    p.add_argument(
        "--success",
        type=float,
        default=0.8,
        help="matched success: also report the weakest strength whose select/ success reaches it",
    )
    p.add_argument("--region-images", type=int, default=64, help="train faces the region map is averaged over")
    p.add_argument("--loco-images", type=int, default=8, help="train faces the LOCO Jacobians are shared over")
    p.add_argument("--region", nargs="*", default=[], help="discover.py method=region overrides")
    p.add_argument("overrides", nargs="*", help="discover.py method=loco overrides (method.t=..., plan.n_gen=...)")
    a = p.parse_args(argv)
    a.out = Path(a.out).resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    a.cache = a.cache or str(a.out / "cache")
    region = discover(a, "region", f"{a.data}/train", a.region_images, a.region)
    mask = f"method.mask={region / 'mask.pt'}"
    loco = discover(a, "loco", f"{a.data}/train", a.loco_images, [mask, *a.overrides])
    ckpt = loco / "loco_00.pt"
    select = edit_and_judge(a, ckpt, "select", a.strengths)
    best = max(select, key=lambda r: (r["margin"], r["success"]))
    reach = [r for r in select if r["success"] >= a.success]  # matched success: the weakest edit that reaches it
    matched = min(reach, key=lambda r: r["strength"]) if reach else best
    chosen = sorted({best["strength"], matched["strength"]})
    test = edit_and_judge(a, ckpt, "test", chosen)
    summary = {
        "attribute": a.attribute,
        "region": json.loads((region / "region.json").read_text()),
        "loco": json.loads((loco / "directions.json").read_text())["directions"][0],
        "select": select,
        "chosen_on": "select",
        "chosen_by_margin": best["strength"],
        "chosen_by_success": {"target": a.success, "strength": matched["strength"], "reached": bool(reach)},
        "test": test,
    }
    (a.out / "summary.json").write_text(json.dumps(summary, indent=1))
    for r in [*select, *test]:
        print(
            f"loco: {a.attribute} {r['split']} strength={r['strength']:g}: success={r['success']:.2f} "
            f"preserved={r['preserved']:.2f} clip_direction={r['clip_direction']:.3f} psnr_rec={r['psnr_rec']:.1f} dB"
            f"{'  <- margin' if r['strength'] == best['strength'] else ''}"
            f"{f'  <- first success >= {a.success:g}' if r['strength'] == matched['strength'] else ''}"
        )


if __name__ == "__main__":
    main()
