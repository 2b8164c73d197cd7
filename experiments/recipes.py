"""A synthfaces recipe at several training seeds: strength chosen on the selection split, numbers reported on test.

    python -m asyrp.synthfaces.data --out data/synthfaces_hat --exclude hat=True --n-select 64
    python experiments/recipes.py --experiment synthfaces_hat --data data/synthfaces_hat --out outputs/recipes/hat \\
        --seeds 0 1 2 --strengths 0.8 1.0 1.2 -- [train.py overrides ...]

Per seed: ``python train.py experiment=<E> seed=s hfunction.seed=s`` (skipped when that run has finished), then
``python edit.py ... sweep=[strengths] cache_dir=... [--edit-override ...]`` on select/ and on test/ (one inversion per image for every seed
and strength: the inversion cache). The oracle, the CLIP direction score and the PSNR to the unedited reconstruction
(``asyrp.metrics.EditScorer``) judge every (split, seed, strength). The strength is the one whose worst seed has the
largest margin min(success - 0.80, preserved - 0.90) on select/ (ties: the better second-worst seed, then the next:
leximin); test/ at that strength is the reported result.
With --reverse-data / --reverse-target the same h-functions also edit faces that HAVE the attribute at negative
strengths (the reverse edit), judged on the reverse target, the strength again chosen on select/.
Writes <out>/summary.json and prints one line per seed (and per seed reversed).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from asyrp import build
from asyrp.config import compose
from asyrp.data.cache import cached_inversions
from asyrp.data.images import read_image_files
from asyrp.metrics import EditScorer
from asyrp.ops.io import file_digest
from asyrp.plan import EditPlan
from asyrp.synthfaces.oracle import load_oracle

ROOT = Path(__file__).resolve().parents[1]
SCORES = [
    "n",
    "clip_direction",
    "psnr_rec",
    "oracle",
]  # the sweep's metrics (asyrp.tasks.edit_quality.edit_scorer) without LPIPS


def run(args: list[str], log: Path) -> None:
    print("$ python", " ".join(args), flush=True)
    with open(log, "w") as fh:
        if subprocess.run([sys.executable, *args], cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT).returncode != 0:
            sys.exit(f"recipes: failed: python {' '.join(args)} (log: {log})")


def same_training(old: list[str], new: list[str]) -> bool:
    """Whether two train.py commands train the same function: equal but for where the run and the inversion cache
    live (so a finished s<seed>/train folder copied to another --out is reused)."""
    where = ("hydra.run.dir=", "dataset.cache_dir=")
    return [x for x in old if not x.startswith(where)] == [x for x in new if not x.startswith(where)]


def train_seed(a, seed: int, out: Path) -> float:
    """Train (or find the finished run of the same command) one seed; returns the training seconds (as measured when
    it ran). A finished run of other overrides is trained again, not reused."""
    run_dir = out / f"s{seed}" / "train"
    done = run_dir / "train_seconds.json"
    args = [
        "train.py",
        f"experiment={a.experiment}",
        f"seed={seed}",
        f"hfunction.seed={seed}",
        f"dataset.path={a.data}/train",
        f"dataset.cache_dir={a.cache}",
        "logger=csv",
        "callbacks.edit_grid=null",
        f"hydra.run.dir={run_dir}",
        *a.overrides,
    ]
    if done.is_file():
        old = json.loads(done.read_text())
        if same_training(old.get("args", args), args):
            return old["seconds"]
    t = time.time()
    run(args, out / f"s{seed}_train.log")
    seconds = round(time.time() - t, 1)
    done.write_text(json.dumps({"seconds": seconds, "args": args}))
    return seconds


def edit_split(a, seed: int, data: str, split: str, strengths: list[float], dst: Path, log: Path) -> Path:
    """Edit one split at every strength (a finished run of the same checkpoint, strengths and edit overrides is
    reused)."""
    ckpt = a.out / f"s{seed}" / "train" / "checkpoints" / "hfunction.pt"
    man, given = dst / "edited" / "manifest.json", dst / "edit_overrides.json"
    # {data} / {split}: the edited folder's root and split (per-image files beside the faces, e.g. masks=)
    overrides = [o.replace("{data}", str(data)).replace("{split}", split) for o in a.edit_override]
    if man.is_file():
        old = json.loads(man.read_text())
        same_ckpt = [c.get("digest") for c in old.get("checkpoints", [])] == [file_digest(ckpt)]
        same_edit = (json.loads(given.read_text()) if given.is_file() else []) == overrides
        if (
            old.get("complete")
            and same_ckpt
            and same_edit
            and old.get("coefficients") == [[float(s)] for s in strengths]
        ):
            return dst / "edited"
    sweep = "[" + ",".join(str(s) for s in strengths) + "]"
    run(
        [
            "edit.py",
            "arch=synthfaces",
            "plan=synthfaces",
            f"checkpoint={ckpt}",
            f"input_dir={data}/{split}",
            f"sweep={sweep}",
            "strength=1",  # the sweep's strengths are absolute, whatever edit strength the file records
            f"cache_dir={a.cache}",
            "batch_size=32",
            "progress=false",
            "grid_rows=8",
            f"hydra.run.dir={dst}",
            "overwrite=true",
            *overrides,
        ],
        log,
    )
    given.write_text(json.dumps(overrides))
    return dst / "edited"


def judge(a, cfg, world, edited: Path, split: str, strengths: list[float], texts: tuple, target: str) -> list[dict]:
    """Every strength of one edit run: oracle success / preserved for ``target``, CLIP direction (``texts``: source,
    target), PSNR to the unedited reconstruction, and the margin to the targets."""
    clip, backbone, oracle = world
    man = json.loads((edited / "manifest.json").read_text())
    items = man["inputs"]
    srcs = [Path(it["source"]) for it in items]
    x_src = read_image_files(srcs, 32)
    steps = EditPlan(n_inv=man["n_inv"], n_gen=man["n_gen"], t0=man["t0"], spacing=man.get("spacing", "official"))
    entries = cached_inversions(a.cache, backbone, build.alpha_bar(cfg.arch), srcs, steps, image_size=32)
    x_rec = torch.stack([e["x_rec"] for e in entries]).float()
    scorer = EditScorer(clip=clip, source=list(texts[0]), target=list(texts[1]), oracle=oracle, oracle_target=target)
    rows = []
    for k, strength in enumerate(strengths):
        x_edit = read_image_files([edited / it["outputs"][k] for it in items], 32)
        m = scorer.score(x_src, x_edit, SCORES, x_rec=x_rec, prefix="edit/")
        m.update(split=split, strength=strength)
        m["margin"] = min(m["edit/success"] - 0.8, m["edit/preserved"] - 0.9)
        rows.append(m)
    return rows


def choose(results: dict, key: str, strengths: list[float]) -> float:
    """The strength whose worst seed has the largest margin on select/; ties go to the better second-worst seed, and
    so on (leximin over the seeds' margins)."""
    margins = {
        s: sorted(
            next(r["margin"] for r in v[key] if r["split"] == "select" and r["strength"] == s)
            for v in results["seeds"].values()
        )
        for s in strengths
    }
    results[f"{key}_select_worst_margin"] = {s: m[0] for s, m in margins.items()}
    results[f"{key}_select_margins_sorted"] = {s: m for s, m in margins.items()}
    return max(strengths, key=lambda s: margins[s])


def report(results: dict, key: str, best: float, label: str) -> dict:
    rep = {
        seed: next(r for r in v[key] if r["split"] == "test" and r["strength"] == best)
        for seed, v in results["seeds"].items()
    }
    for seed, r in rep.items():
        print(
            f"recipes: {label} seed={seed} strength={best} test: success={r['edit/success']:.2f} "
            f"preserved={r['edit/preserved']:.2f} clip_direction={r['edit/clip_direction']:.3f} "
            f"psnr_rec={r['edit/psnr_rec']:.1f} dB train_seconds={results['seeds'][seed]['train_seconds']}"
        )
    return rep


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", required=True)
    p.add_argument("--data", required=True, help="folder with train/, select/, test/ (python -m asyrp.synthfaces.data)")
    p.add_argument("--out", required=True)
    p.add_argument("--cache", default=None, help="inversion cache folder (default: <out>/../cache)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--strengths", type=float, nargs="+", default=[1.0])
    p.add_argument(
        "--reverse-data",
        default=None,
        help="also the reverse edit: faces WITH the attribute (select/, test/), edited at minus each "
        "--reverse-strengths and judged on --reverse-target",
    )
    p.add_argument(
        "--reverse-target",
        default=None,
        help="the oracle's reading of a reversed face, e.g. mouth!=smiling or glasses=False",
    )
    p.add_argument("--reverse-strengths", type=float, nargs="+", default=None, help="default: --strengths")
    p.add_argument(
        "--edit-override",
        action="append",
        default=[],
        help="an edit.py override for every edit of the recipe (repeatable), e.g. plan.t_edit=300",
    )
    p.add_argument("overrides", nargs="*", help="train.py overrides (the recipe)")
    a = p.parse_args(argv)
    if bool(a.reverse_data) != bool(a.reverse_target):
        p.error("--reverse-data and --reverse-target go together")
    a.out = Path(a.out)
    a.out.mkdir(parents=True, exist_ok=True)
    a.cache = a.cache or str(a.out.parent / "cache")
    cfg = compose("train", [f"experiment={a.experiment}", *a.overrides])
    world = (build.clip(cfg.clip), build.backbone(cfg.arch), load_oracle())
    texts = (cfg.attribute.source, cfg.attribute.target)
    rev = [-abs(s) for s in (a.reverse_strengths or a.strengths)]
    results = {
        "experiment": a.experiment,
        "overrides": a.overrides,
        "edit_overrides": a.edit_override,
        "strengths": a.strengths,
        "t0": cfg.plan.t0,
        "t_edit": cfg.plan.t_edit,
        "t_boost": cfg.plan.t_boost,
        "seeds": {},
    }
    for seed in a.seeds:
        secs = train_seed(a, seed, a.out)
        rows = [
            r
            for split in ("select", "test")
            for r in judge(
                a,
                cfg,
                world,
                edit_split(
                    a, seed, a.data, split, a.strengths, a.out / f"s{seed}" / split, a.out / f"s{seed}_{split}_edit.log"
                ),
                split,
                a.strengths,
                texts,
                cfg.attribute.oracle_target,
            )
        ]
        results["seeds"][str(seed)] = {"train_seconds": secs, "rows": rows}
        if a.reverse_data:
            results["seeds"][str(seed)]["reverse_rows"] = [
                r
                for split in ("select", "test")
                for r in judge(
                    a,
                    cfg,
                    world,
                    edit_split(
                        a,
                        seed,
                        a.reverse_data,
                        split,
                        rev,
                        a.out / f"s{seed}" / f"reverse_{split}",
                        a.out / f"s{seed}_reverse_{split}_edit.log",
                    ),
                    split,
                    rev,
                    texts[::-1],
                    a.reverse_target,
                )
            ]
        (a.out / "summary.json").write_text(json.dumps(results, indent=1))
    best = choose(results, "rows", a.strengths)
    results.update(chosen_strength=best, select_worst_margin=results.pop("rows_select_worst_margin"))
    results["test_at_chosen"] = report(results, "rows", best, a.experiment)
    if a.reverse_data:
        best_rev = choose(results, "reverse_rows", rev)
        results.update(
            reverse_target=a.reverse_target,
            reverse_chosen_strength=best_rev,
            reverse_test_at_chosen=report(
                results, "reverse_rows", best_rev, f"{a.experiment} reversed ({a.reverse_target})"
            ),
        )
    (a.out / "summary.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
