"""The catalogue of bad inputs and faults (docs/reliability.md), run as real processes: train.py and edit.py killed
with SIGKILL then rerun, secrets kept out of every file a run writes, one-line errors and exit codes from the command
line. The in-process half of the catalogue is tests/integration/test_reliability.py."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import images, tiny_hfunction_file

import asyrp.ops.claims as claims
import asyrp.tasks.edit as edit_task
import asyrp.tasks.train as train_task
from asyrp.config import compose
from asyrp.ops import secrets
from asyrp.ops.io import atomic_write_png

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]


def env(**extra) -> dict:
    return dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=f"{TESTS}:{ROOT}", **extra)


def run(*args, timeout=300, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, *map(str, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=kw.pop("env", env()),
        **kw,
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("world")
    bb = tiny_hfunction_file(d, official=True)
    faces = d / "faces"
    faces.mkdir()
    for i, img in enumerate(images(3, size=40, seed=1)):
        atomic_write_png(img, faces / f"face_{i}.png")
    return {"dir": d, "backbone": bb, "hf": d / "hf.pt", "official": d / "hf_official.pth", "faces": faces}


def test_cli_unknown_arch_and_missing_value_exit_2_one_line(tmp_path, world):
    p = run("edit.py", "arch=tiny_dpm", f"hydra.run.dir={tmp_path / 'a'}")
    assert p.returncode == 2 and p.stderr.strip().startswith("error: unknown arch 'tiny_dpm'")
    assert len(p.stderr.strip().splitlines()) == 1 and not (tmp_path / "a").exists()
    p = run("edit.py", "arch=tiny_ddpm", f"input_dir={world['faces']}", f"hydra.run.dir={tmp_path / 'b'}")
    err = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 2 and "Traceback" not in p.stderr and len(err) == 1 and "checkpoint is required" in err[0]
    assert not (tmp_path / "b" / "edited").exists()


TRAIN_ARGS = [
    "debug=smoke",
    "logger=csv",
    "dataset.batch_size=1",
    "model.n_iter=2",
    "callbacks.edit_grid=null",
    "trainer.limit_val_batches=0",
    "callbacks.model_checkpoint.every_n_train_steps=4",
    "model.scheduler.step_size=1",
    "model.scheduler.gamma=0.5",
    "+callbacks.killer._target_=faults.KillAtStep",
]


SECRETS = {
    "WANDB_API_KEY": "wandb-fake-key-0123456789",
    "HF_TOKEN": "hf_faketoken_abcdef",
    "MY_DB_PASSWORD": "hunter2-pw",
}


CFG_SECRET = "cfg-secret-value-987"


@pytest.fixture(scope="module")
def killed_and_resumed(tmp_path_factory):
    d = tmp_path_factory.mktemp("kill")
    args = [
        "train.py",
        *TRAIN_ARGS,
        f"dataset.cache_dir={d / 'cache'}",
        f"hydra.run.dir={d / 'run'}",
        f"+wandb_api_key={CFG_SECRET}",
    ]
    killed = run(*args, env=env(ASYRP_TEST_KILL_AT_STEP="6", **SECRETS))
    last = d / "run" / "checkpoints" / "last.ckpt"
    step_at_kill = torch.load(last, weights_only=True, map_location="cpu")["global_step"] if last.is_file() else None
    resumed = run(*args, env=env(**SECRETS))  # the same command: resumes from last.ckpt by itself
    return {"dir": d, "killed": killed, "resumed": resumed, "step_at_kill": step_at_kill}


@pytest.mark.slow
def test_sigkill_during_training_then_resume_matches_uninterrupted(killed_and_resumed, tmp_path):
    k = killed_and_resumed
    assert k["killed"].returncode == -signal.SIGKILL, k["killed"].stderr[-2000:]
    # killed at the start of the 4th batch (global step 6): last.ckpt is from step 4, so steps 5-6 were done and
    # lost, and the resumed run recomputes them (mid-epoch, with the scheduler and RNG state of step 4)
    assert k["step_at_kill"] == 4
    assert k["resumed"].returncode == 0, k["resumed"].stderr[-3000:]
    assert "resuming from" in k["resumed"].stderr + k["resumed"].stdout
    # the killed run still held the run folder: the kernel dropped its lock, the rerun takes the claim over
    assert "taking over a claim left by a process that ended" in k["resumed"].stderr + k["resumed"].stdout
    args = [a for a in TRAIN_ARGS if "killer" not in a]
    _, ref = train_task.train(
        compose("train", args + [f"dataset.cache_dir={k['dir'] / 'cache'}"], output_dir=tmp_path / "ref")
    )
    assert ref["trainer"].global_step == 16
    got = torch.load(k["dir"] / "run" / "checkpoints" / "hfunction.pt", weights_only=True)["state_dict"]
    want = ref["module"].hfunc.state_dict()
    assert max((got[n] - want[n]).abs().max().item() for n in want) < 1e-6


@pytest.mark.slow
def test_no_secret_reaches_any_file_the_run_wrote(killed_and_resumed):
    k = killed_and_resumed
    assert k["resumed"].returncode == 0
    files = [p for p in (k["dir"] / "run").rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"config.yaml", "overrides.yaml", "hparams.yaml", "last.ckpt", "hfunction.pt"} <= names, names
    for p in files:
        data = p.read_bytes()
        for v in [*SECRETS.values(), CFG_SECRET]:
            assert v.encode() not in data, f"{v} written to {p}"
    assert secrets.REDACTED in (k["dir"] / "run" / ".hydra" / "overrides.yaml").read_text()
    for out in (k["killed"], k["resumed"]):
        assert not any(v in out.stdout + out.stderr for v in [*SECRETS.values(), CFG_SECRET])


@pytest.mark.slow
def test_no_secret_reaches_the_wandb_run_files(tmp_path):
    """W&B stores the command line (sys.argv) with the run: a key passed as an override must arrive redacted."""
    run_dir = tmp_path / "run"
    p = run(
        "train.py",
        "debug=smoke",
        "logger=wandb",
        "callbacks.edit_grid=null",
        "trainer.limit_val_batches=0",
        f"dataset.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run_dir}",
        f"+wandb_api_key={CFG_SECRET}",
        env=env(**SECRETS),
    )
    assert p.returncode == 0, p.stderr[-3000:]
    records = list((run_dir / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(records) == 1
    assert b"+wandb_api_key=" + secrets.REDACTED.encode() in records[0].read_bytes()  # the argv is there, redacted
    for f in (q for q in run_dir.rglob("*") if q.is_file()):
        data = f.read_bytes()
        for v in [*SECRETS.values(), CFG_SECRET]:
            assert v.encode() not in data, f"{v} written to {f}"
    assert not any(v in p.stdout + p.stderr for v in [*SECRETS.values(), CFG_SECRET])


def test_sigkill_during_cache_build_leaves_no_corrupt_entry(tmp_path):
    from faults import tiny_cache

    from asyrp.data.cache import load_entry

    p = run(TESTS / "faults.py", "cache", tmp_path, 3)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    cache, sources = tiny_cache(tmp_path)
    present = [s for s in sources if cache.path_for(s).is_file()]
    assert len(present) == 2  # entries 1 and 2 complete; 3 was cut mid-write and never became visible
    mtimes = {s.id: cache.path_for(s).stat().st_mtime_ns for s in present}
    for s in present:
        load_entry(cache.path_for(s))
    cache.build(sources)  # the next run reuses the complete entries and computes the rest
    assert all(cache.path_for(s).stat().st_mtime_ns == mtimes[s.id] for s in present)
    for s in sources:
        load_entry(cache.path_for(s))


def test_sigkill_during_edit_then_rerun_completes_only_the_missing(tmp_path, world):
    faces = tmp_path / "faces"
    faces.mkdir()
    for i, img in enumerate(images(5, size=32, seed=3)):
        atomic_write_png(img, faces / f"img_{i}.png")
    args = [
        "arch=tiny_ddpm",
        f"checkpoint={world['hf']}",
        f"input_dir={faces}",
        "batch_size=2",
        "progress=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    p = run(TESTS / "faults.py", "edit", 3, *args)  # killed after the 3rd PNG: batch 2 half written
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]
    out = tmp_path / "run" / "edited"
    before = {f.name: f.stat().st_mtime_ns for f in out.glob("img_*.png")}
    assert sorted(before) == ["img_0.png", "img_1.png", "img_2.png"]
    assert not list(out.glob(".*.tmp"))
    # img_2.png was written but not journalled when the process died: not known to be done, so edited again
    res = edit_task.edit(compose("edit", args[:-1], output_dir=tmp_path / "run"))
    assert res["done_before"] == 2 and res["edited"] == 3
    assert all((out / n).stat().st_mtime_ns == before[n] for n in ("img_0.png", "img_1.png"))  # not recomputed
    # ... and the result is that of one uninterrupted run, byte for byte: img_3 is edited in the batch it had there
    # ([img_2, img_3], only img_3 written), and the images' noise comes from their own seeds
    ref = edit_task.edit(compose("edit", args[:-1] + [f"output_dir={tmp_path / 'ref'}"], output_dir=tmp_path / "run2"))
    assert ref["edited"] == 5
    for i in range(5):
        assert (out / f"img_{i}.png").read_bytes() == (tmp_path / "ref" / f"img_{i}.png").read_bytes(), i


def test_train_cli_refuses_another_runs_folder_before_hydra_writes(tmp_path):
    """A train.py run pointed at another training run's folder stops (exit 2, one line) before Hydra rewrites that
    run's .hydra/ files; overwrite=true is the way to replace it."""
    run_dir = tmp_path / "run"
    (run_dir / ".hydra").mkdir(parents=True)
    (run_dir / claims.RUN_STAMP).write_text(json.dumps({"task": "train", "fingerprint": "another-run"}))
    (run_dir / ".hydra" / "config.yaml").write_text("theirs: 1\n")
    p = run("train.py", "debug=smoke", f"hydra.run.dir={run_dir}", timeout=120)
    err = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert (
        p.returncode == 2
        and len(err) == 1
        and "already holds the outputs of another training run" in err[0]
        and "overwrite=true" in err[0]
    ), p.stderr[-2000:]
    assert (run_dir / ".hydra" / "config.yaml").read_text() == "theirs: 1\n"
    assert sorted(q.name for q in run_dir.iterdir()) == [".asyrp_run.json", ".hydra"]


def test_a_run_stopped_by_a_user_error_leaves_no_run_folder(tmp_path):
    """No partial output: the folder Hydra made for a run that failed validation is removed again; one that
    existed before is kept untouched."""
    p = run(
        "edit.py",
        "arch=tiny_ddpm",
        f"checkpoint={tmp_path / 'missing.pt'}",
        f"input_dir={tmp_path}",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert p.returncode == 2, p.stderr[-2000:]
    assert p.stderr.strip().splitlines()[-1].startswith("error: h-function checkpoint not found")
    assert "Traceback" not in p.stderr
    assert not (tmp_path / "run").exists()
    keep = tmp_path / "old"
    keep.mkdir()
    (keep / "mine.txt").write_text("x")
    p = run(
        "edit.py",
        "arch=tiny_ddpm",
        f"checkpoint={tmp_path / 'missing.pt'}",
        f"input_dir={tmp_path}",
        f"hydra.run.dir={keep}",
    )
    assert p.returncode == 2
    assert (keep / "mine.txt").read_text() == "x"
