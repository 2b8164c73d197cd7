"""`make demo`: Asyrp on the shipped synthfaces world, through the normal train.py and edit.py.

1. writes faces (train: 256 non-smiling, test: 64 held-out non-smiling) with python -m asyrp.synthfaces.data;
2. trains the "smiling" h-function at three training seeds: python train.py experiment=synthfaces_smiling seed=s
   hfunction.seed=s (shipped DDPM and CLIP), and the second attribute's h-function once;
3. edits the test faces: python edit.py with each checkpoint (one inversion per face: the inversion cache), and with
   smiling + the second attribute composed;
4. the oracle (never used in training) judges: success = the edited face smiles, preserved = all its other
   attributes are as in the source, per seed against the targets 0.80 / 0.90. Writes a grid (rows of sources, then
   smiling, the second attribute, both) and a metrics JSON; the last line is the summary (the worst seed).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "outputs" / "demo"
TARGET = "mouth=smiling"
TARGETS = {"success": 0.80, "preserved": 0.90}
SEEDS = (0, 1, 2)
# Edit strength (the official hs_coeff), chosen on the selection split select/ (seed 3), never on the test faces judged
# here: experiments/recipes.py at seeds 0-2, the best worst-seed margin on select/ (0.6: worst margin 0.02, 0.7: 0.01;
# docs/results.md, "Six attributes").
STRENGTH = 0.6
# the second attribute (shown in the grid, and composed): the glasses recipe at the strength chosen on select/ at 3 seeds
SECOND, SECOND_TARGET, SECOND_STRENGTH = "synthfaces_glasses", "glasses=True", 1.2


def run(*args: str) -> None:
    cmd = [sys.executable, *args]
    print("$ python", " ".join(args), flush=True)
    if subprocess.run(cmd, cwd=ROOT).returncode != 0:
        sys.exit(f"demo: failed: python {' '.join(args)}")


# What the trainings would compute and the demo does not show: validation edits every epoch and an edit grid every 400
# steps (the end-of-training grid stays). The h-functions come out bit-identical (tests/integration/test_module.py);
# about 1/15 of a smiling training's network passes and 1/5 of the glasses training's (docs/performance.md, "make demo").
UNSHOWN = ("trainer.limit_val_batches=0", "callbacks.edit_grid.every_n_steps=0", "optimized_metric=null")


def train(name: str, data: Path, *overrides: str) -> Path:
    run(
        "train.py",
        *overrides,
        *UNSHOWN,
        f"dataset.path={data / 'train'}",
        "logger=csv",
        f"hydra.run.dir={OUT / name}",
        f"dataset.cache_dir={OUT / 'cache'}",
    )
    return OUT / name / "checkpoints" / "hfunction.pt"


def edit(name: str, data: Path, checkpoint: str, *overrides: str) -> Path:
    run(
        "edit.py",
        "arch=synthfaces",
        "plan=synthfaces",
        f"checkpoint={checkpoint}",
        f"input_dir={data / 'test'}",
        "batch_size=32",
        f"cache_dir={OUT / 'cache'}",
        *overrides,
        f"hydra.run.dir={OUT / name}",
    )
    return OUT / name / "edited"


def judge_second(oracle, x_src, x_second, x_both) -> dict:
    """The second attribute on the test faces that lack it; the composition: both targets hold, the rest kept."""
    import torch

    from asyrp.synthfaces.judge import judge_pairs, parse_target

    key, value = parse_target(SECOND_TARGET)
    lack = oracle.judge(x_src)[key] != value
    second = judge_pairs(oracle, x_src[lack], x_second[lack], SECOND_TARGET)
    second.pop("per_image")
    m_key, m_value = parse_target(TARGET)
    src, both = oracle.judge(x_src[lack]), oracle.judge(x_both[lack])
    ok = (both[key] == value) & (both[m_key] == m_value)
    kept = torch.stack([both[h] == src[h] for h in src if h not in (key, m_key, "confidence")], 1).all(1)
    return {
        "second": second,
        "both": {"n": int(lack.sum()), "success": float(ok.float().mean()), "preserved": float(kept.float().mean())},
    }


def main() -> None:
    t_start = time.time()
    os.environ.setdefault("WANDB_MODE", "offline")
    if OUT.exists():  # the demo is one self-contained run: start clean
        shutil.rmtree(OUT)
    data = OUT / "data"
    run("-m", "asyrp.synthfaces.data", "--out", str(data), "--n-train", "256", "--n-test", "64")
    # seed 0 in outputs/demo/train: the h-function app.py opens with
    ckpts = {
        s: train(
            "train" if s == SEEDS[0] else f"train_s{s}",
            data,
            "experiment=synthfaces_smiling",
            f"seed={s}",
            f"hfunction.seed={s}",
        )
        for s in SEEDS
    }
    edited = {s: edit(f"edit_s{s}", data, str(ckpts[s]), f"strength={STRENGTH}") for s in SEEDS}
    # the second attribute trains on faces that lack it (its own split of the same dataset seed)
    key, value = SECOND_TARGET.split("=")
    run(
        "-m",
        "asyrp.synthfaces.data",
        "--out",
        str(OUT / "data_second"),
        "--exclude",
        f"{key}={value}",
        "--n-train",
        "64",
        "--n-test",
        "0",
    )
    second = train("train_second", OUT / "data_second", f"experiment={SECOND}")
    edited_second = edit("edit_second", data, str(second), f"strength={SECOND_STRENGTH}")
    edited_both = edit("edit_both", data, f"[{ckpts[SEEDS[0]]},{second}]", f"coeffs=[{STRENGTH},{SECOND_STRENGTH}]")

    from asyrp.data.images import read_image_files
    from asyrp.grid import columns_grid, save_grid
    from asyrp.synthfaces.judge import judge_pairs
    from asyrp.synthfaces.oracle import load_oracle

    names = sorted(p.name for p in (data / "test").glob("*.png"))
    x_src = read_image_files([data / "test" / n for n in names], 32)
    oracle = load_oracle()
    per_seed, verdicts = {}, {}
    for s in SEEDS:
        r = judge_pairs(oracle, x_src, read_image_files([edited[s] / n for n in names], 32), TARGET)
        verdicts[s] = r.pop("per_image")
        r["met"] = r["success"] >= TARGETS["success"] and r["preserved"] >= TARGETS["preserved"]
        per_seed[s] = r
        print(
            f"demo: seed {s}: success={r['success']:.2f} preserved={r['preserved']:.2f} "
            f"(targets {TARGETS['success']:.2f} / {TARGETS['preserved']:.2f}: {'met' if r['met'] else 'NOT met'})"
        )
    x_smile = read_image_files([edited[SEEDS[0]] / n for n in names], 32)
    x_second = read_image_files([edited_second / n for n in names], 32)
    x_both = read_image_files([edited_both / n for n in names], 32)
    extra = judge_second(oracle, x_src, x_second, x_both)
    print(
        f"demo: {SECOND} (seed 0, {extra['second']['n']} faces without it): success={extra['second']['success']:.2f} "
        f"preserved={extra['second']['preserved']:.2f}; smiling + {SECOND}: both={extra['both']['success']:.2f} "
        f"others kept={extra['both']['preserved']:.2f}"
    )
    worst = {k: min(r[k] for r in per_seed.values()) for k in ("success", "preserved")}
    n = min(len(names), 32)  # 32 held-out faces in 4 panels; each row says how the oracle judged the smiling edit
    verdict = [
        f"{Path(k).stem}: {'smiles' if v['success'] else 'no smile'}, {'kept' if v['preserved'] else 'changed'}"
        for k, v in zip(names[:n], verdicts[SEEDS[0]][:n])
    ]
    scores = ", ".join(f"{r['success']:.2f} / {r['preserved']:.2f}" for r in per_seed.values())
    title = (
        f"make demo: 'smiling' h-function (train.py experiment=synthfaces_smiling, seed {SEEDS[0]}), held-out "
        f"faces edited at strength {STRENGTH:g}; then {SECOND} x{SECOND_STRENGTH:g}, and both composed. "
        f"success / preserved per seed {scores}"
        f" (targets {TARGETS['success']:.2f} / {TARGETS['preserved']:.2f}): share of the {len(names)} edits the "
        f"oracle reads as smiling / with every other attribute as in the input. Rows: 'smiles' / 'kept' per face "
        f"(smiling column)."
    )
    grid = OUT / "grid.png"
    save_grid(
        grid,
        columns_grid(
            [
                ("input", x_src[:n]),
                (f"smiling x{STRENGTH:g}", x_smile[:n]),
                (f"{SECOND.removeprefix('synthfaces_')} x{SECOND_STRENGTH:g}", x_second[:n]),
                ("both", x_both[:n]),
            ],
            verdict,
            title,
            blocks=4,
        ),
    )
    metrics = OUT / "metrics.json"
    res = {
        "target": TARGET,
        "strength": STRENGTH,
        "targets": TARGETS,
        "seeds": per_seed,
        "worst_seed": worst,
        "all_seeds_met": all(r["met"] for r in per_seed.values()),
        "second": {"experiment": SECOND, "strength": SECOND_STRENGTH, **extra},
        "grid_columns": ["source", f"smiling (seed {SEEDS[0]})", SECOND, "smiling + " + SECOND],
        "seconds": round(time.time() - t_start, 1),
    }
    metrics.write_text(json.dumps(res, indent=1))
    print(
        f"demo: success={worst['success']:.2f} preserved={worst['preserved']:.2f} (worst of seeds {list(SEEDS)}; "
        f"targets met at every seed: {res['all_seeds_met']}) grid={grid.relative_to(ROOT)} "
        f"metrics={metrics.relative_to(ROOT)}"
    )


if __name__ == "__main__":
    import argparse

    # no options: the demo is one fixed job, but --help says what it does instead of starting it
    argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter).parse_args()
    main()
