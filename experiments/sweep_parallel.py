"""k sweep trials side by side against the same trials one after another, measured in one run.

Runs the same tiny edit-quality sweep (hparams_search=edit_quality, debug=smoke, a seeded sampler, so both arms
train and judge the same settings in the same order) twice from the same warm inversion cache:

  parallel  trials=joblib: --workers trials at once, --threads torch threads each     (Hydra's joblib launcher)
  serial    Hydra's basic launcher: one trial after another with --serial-threads threads

and prints the wall time of each and serial / parallel. The arms alternate who goes first over --rounds rounds (so
machine load hits both alike); a warm-up sweep fills the inversion cache first, so neither arm pays for it.
What the ratio says: above 1, one core per trial beats two threads on one trial, because a tiny trial is mostly
Python, data loading and small kernels that do not fill two threads; on a GPU node the same holds for the CPU side
of each trial, and k trials share a GPU only when each leaves it idle most of the time.

    python experiments/sweep_parallel.py                          # 4 trials, 2 workers x 1 thread vs 2 threads
    python experiments/sweep_parallel.py --trials 2 --rounds 1    # seconds: checks that it works
Needs pip install 'asyrp[joblib]'.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from asyrp.synthfaces.data import write_split

ROOT = Path(__file__).resolve().parents[1]


def sweep_command(args, out: Path, arm: str, n_trials: int) -> tuple[list[str], dict]:
    """The train.py sweep of one arm and its environment (threads set per process)."""
    cmd = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        "hparams_search=edit_quality",
        "experiment=synthfaces_glasses",
        "debug=smoke",
        "logger=csv",
        "callbacks.edit_grid=null",
        "plan.t0=999",
        f"n_trials={n_trials}",
        f"edit_quality.input_dir={out / 'select'}",
        f"paths.cache_dir={out / 'cache'}",
        f"hydra.sweep.dir={out / arm}",
    ]
    threads = args.threads if arm.startswith("parallel") else args.serial_threads
    if arm.startswith("parallel"):
        cmd += ["trials=joblib", f"trials.workers={args.workers}", f"trials.threads={args.threads}"]
    else:
        cmd += [f"hydra.sweeper.threads={args.serial_threads}"]
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), WANDB_MODE="offline")
    return cmd, env


def run_arm(args, out: Path, arm: str, n_trials: int) -> float:
    if (out / arm).exists() and arm != "warmup":  # its study would resume with nothing left to do
        sys.exit(f"error: {out / arm} exists (a finished sweep): pass another --out")
    cmd, env = sweep_command(args, out, arm, n_trials)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    if p.returncode != 0:
        sys.exit(f"error: the {arm} sweep failed (exit {p.returncode}): {p.stderr.strip().splitlines()[-1:]}")
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2, help="trials at once in the parallel arm")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of each parallel trial")
    ap.add_argument("--serial-threads", type=int, default=2, help="torch threads of each serial trial")
    ap.add_argument("--rounds", type=int, default=1, help="parallel and serial each this many times, alternating")
    ap.add_argument("--n-select", type=int, default=4, help="images of the selection split each trial edits")
    ap.add_argument("--out", default=None, help="folder for the sweeps (default: a temporary folder)")
    args = ap.parse_args()
    out = Path(args.out or tempfile.mkdtemp(prefix="sweep_parallel_"))
    write_split(out / "select", seed=3, n=args.n_select, exclude={"glasses": "True"})
    print(f"warm-up: one trial fills the inversion cache ({out / 'cache'})", flush=True)
    run_arm(args, out, "warmup", 1)
    times: dict[str, list[float]] = {"parallel": [], "serial": []}
    for r in range(args.rounds):
        for arm in ("parallel", "serial") if r % 2 == 0 else ("serial", "parallel"):
            times[arm].append(run_arm(args, out, f"{arm}_{r}", args.trials))
            print(f"round {r + 1}/{args.rounds}: {arm} {times[arm][-1]:.1f} s", flush=True)
    par, ser = statistics.median(times["parallel"]), statistics.median(times["serial"])
    print(f"\n{args.trials} trials (hparams_search=edit_quality, debug=smoke), median of {args.rounds} round(s):")
    par_name = f"parallel: {args.workers} workers x {args.threads} thread(s)"
    ser_name = f"serial: one after another x {args.serial_threads} thread(s)"
    width = max(len(par_name), len(ser_name))
    print(f"  {par_name:<{width}}  {par:8.1f} s")
    print(f"  {ser_name:<{width}}  {ser:8.1f} s")
    print(f"  serial / parallel = {ser / par:.2f}   (sweeps and tables under {out})")


if __name__ == "__main__":
    main()
