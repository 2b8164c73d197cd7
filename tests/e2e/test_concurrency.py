"""Races between real processes (docs/reliability.md, "Concurrency"): four runs started together against one edit
output folder, one train run folder and one inversion cache; a kill -9 of the holder of a folder."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import images, tiny_hfunction_file

import asyrp.ops.claims as claims
import asyrp.tasks.edit as edit_task
import asyrp.tasks.train as train_task
from asyrp.config import compose
from asyrp.data.cache import load_entry
from asyrp.ops.io import atomic_write_png

ROOT = Path(__file__).resolve().parents[2]
TESTS = Path(__file__).resolve().parents[1]
N = 4


def env() -> dict:
    return dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", PYTHONPATH=f"{TESTS}:{ROOT}")


def race(tmp: Path, commands: list[list[str]], timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """Start every command (``racer.py`` arguments after the barrier), let them all go at once, collect them."""
    barrier = tmp / f"go{time.monotonic_ns()}"
    procs = [
        subprocess.Popen(
            [sys.executable, str(TESTS / "racer.py"), str(barrier), *map(str, c)],
            cwd=ROOT,
            env=env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for c in commands
    ]
    deadline = time.monotonic() + timeout
    while len(list(tmp.glob(f"{barrier.name}.ready.*"))) < len(procs):  # every contender imported and waiting
        assert time.monotonic() < deadline and all(p.poll() is None for p in procs), [p.communicate() for p in procs]
        time.sleep(0.01)
    barrier.touch()
    out = []
    for p, c in zip(procs, commands):
        stdout, stderr = p.communicate(timeout=timeout)
        out.append(subprocess.CompletedProcess(c, p.returncode, stdout, stderr))
    return out


def error_lines(p: subprocess.CompletedProcess) -> list[str]:
    return [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]


def check_outcome(
    procs: list[subprocess.CompletedProcess], key=lambda p: tuple(p.args)
) -> list[subprocess.CompletedProcess]:
    """No traceback anywhere; every failure is one error line with exit 2 (another run there, or a run in
    progress); the runs that succeeded all had the same settings. Returns the successful ones."""
    for p in procs:
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
        if p.returncode != 0:
            errs = error_lines(p)
            assert p.returncode == 2 and len(errs) == 1, (p.returncode, p.stderr[-3000:])
            assert "in progress" in errs[0] or "another" in errs[0], errs[0]
    ok = [p for p in procs if p.returncode == 0]
    assert ok and len({key(p) for p in ok}) == 1, [(p.returncode, p.args) for p in procs]
    # they overlapped: the folder was held while at least one other contender arrived
    assert any("in progress" in e for p in procs for e in error_lines(p)), [error_lines(p) for p in procs]
    return ok


# -- the lock and the cache reader, in one process ------------------------------------------------------------------
def test_lock_is_exclusive_and_a_dead_holders_record_is_reported(tmp_path, caplog):
    from asyrp.ops import locks

    path = tmp_path / "f" / claims.LOCK
    held = locks.acquire(path, {"task": "edit", "fingerprint": "a"})
    with pytest.raises(locks.LockBusy) as busy:  # a second descriptor, even in this process, is refused
        locks.acquire(path, {"task": "edit", "fingerprint": "b"})
    assert busy.value.holder["pid"] == os.getpid() and busy.value.holder["fingerprint"] == "a"
    held.release()
    assert not path.exists()
    with caplog.at_level("WARNING"):
        locks.acquire(path).release()  # a clean release leaves nothing to take over
        assert "taking over" not in caplog.text
        path.write_text(json.dumps({"pid": 999999999, "host": "gone", "since": "then", "task": "train"}))
        again = locks.acquire(path)  # a record without a lock: its process died holding the claim
    assert "taking over a claim left by a process that ended without releasing it (pid 999999999 on gone" in caplog.text
    assert json.loads(path.read_text())["pid"] == os.getpid()
    again.release()


def test_a_cache_entry_is_checked_whole_on_read(tmp_path):
    from asyrp.ops.errors import AsyrpUserError
    from asyrp.ops.io import atomic_save

    entry = {
        "id": "a",
        "x0": torch.zeros(3, 4, 4),
        "x_T": torch.zeros(3, 4, 4),
        "x_rec": torch.zeros(3, 4, 4),
        "P_orig": torch.zeros(2, 3, 4, 4),
        "t": torch.tensor([999, 500]),
    }
    atomic_save(entry, tmp_path / "ok.pt")
    assert load_entry(tmp_path / "ok.pt")["id"] == "a"
    atomic_save({k: v for k, v in entry.items() if k != "P_orig"}, tmp_path / "bad.pt")
    with pytest.raises(AsyrpUserError, match="bad.pt is unreadable .*P_orig.*delete it to recompute"):
        load_entry(tmp_path / "bad.pt")
    atomic_save(entry, tmp_path / "again.pt")  # the same object, the same bytes (whatever the temporary name)
    assert (tmp_path / "again.pt").read_bytes() == (tmp_path / "ok.pt").read_bytes()


# -- edit: one output_dir ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("race")
    tiny_hfunction_file(d, n_steps=8, attribute=None, strength=None)
    (d / "faces").mkdir()
    for i, img in enumerate(images(6, size=32, seed=5)):
        atomic_write_png(img, d / "faces" / f"face_{i}.png")
    args = ["arch=tiny_ddpm", f"checkpoint={d / 'hf.pt'}", f"input_dir={d / 'faces'}", "batch_size=1", "progress=false"]
    refs = {}
    for s in ("1.0", "0.5"):  # what each setting writes, from a run alone
        refs[s] = edit_task.edit(compose("edit", args + [f"strength={s}"], output_dir=d / f"ref_{s}"))["output_dir"]
    return {"dir": d, "args": args, "refs": refs}


def _strength(p: subprocess.CompletedProcess) -> str:
    return next(a.split("=")[1] for a in p.args if a.startswith("strength="))


def _check_edit_folder(out: Path, refs: dict[str, Path]) -> str:
    """The folder holds one complete run: every PNG its manifest lists, byte for byte that setting's output (and
    not the other's), nothing else but the grid; returns the setting."""
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"]
    setting = {1.0: "1.0", 0.5: "0.5"}[manifest["coefficients"][0][0]]
    other = next(s for s in refs if s != setting)
    listed = {n for it in manifest["inputs"] for n in it["outputs"]}
    assert sorted(p.name for p in out.iterdir()) == sorted(listed | {"grid.png", "manifest.json"})  # no lock, no tmp
    for name in listed:
        got = (out / name).read_bytes()
        assert got == (refs[setting] / name).read_bytes(), name
        assert got != (refs[other] / name).read_bytes(), name
    return setting


@pytest.mark.slow
@pytest.mark.parametrize("strengths", [["1.0", "0.5", "1.0", "0.5"], ["0.5"] * N], ids=["mixed", "same"])
def test_edit_runs_started_together_on_one_output_dir(strengths, world, tmp_path):
    out = tmp_path / "out"
    procs = race(
        tmp_path,
        [
            ["edit", *world["args"], f"strength={s}", f"output_dir={out}", f"hydra.run.dir={tmp_path / f'h{i}'}"]
            for i, s in enumerate(strengths)
        ],
    )
    ok = check_outcome(procs, key=_strength)
    setting = _check_edit_folder(out, world["refs"])
    assert {_strength(p) for p in ok} == {setting}  # the folder holds the run that reported success
    for p in procs:
        if p.returncode != 0 and _strength(p) != setting:  # another setting: the existing refusal or "in progress"
            assert "another edit run" in error_lines(p)[0]


@pytest.mark.slow
def test_kill_9_of_the_holder_lets_the_next_run_proceed(world, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "holding"
    args = [*world["args"], "strength=1.0", f"output_dir={out}"]
    holder = subprocess.Popen(
        [sys.executable, str(TESTS / "racer.py"), "-", "hold", str(marker), *args, f"hydra.run.dir={tmp_path / 'h0'}"],
        cwd=ROOT,
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not marker.exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()[1][-3000:]
            time.sleep(0.05)
        (rec,) = [json.loads((out / claims.LOCK).read_text())]
        assert rec["pid"] == holder.pid and rec["task"] == "edit"
        first = sorted(p.name for p in out.glob("*.png"))
        # overwrite=true does not reach a folder in use: refused, the holder's PNG stays
        refused = race(tmp_path, [["edit", *args, "overwrite=true", f"hydra.run.dir={tmp_path / 'h1'}"]])[0]
        assert (
            refused.returncode == 2
            and "in progress" in error_lines(refused)[0]
            and f"pid {holder.pid}" in error_lines(refused)[0]
        ), refused.stderr[-2000:]
        assert first == ["face_0.png"] and sorted(p.name for p in out.glob("*.png")) == first
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert holder.returncode == -signal.SIGKILL and (out / claims.LOCK).exists()  # the dead holder's record stays
    nxt = race(tmp_path, [["edit", *args, f"hydra.run.dir={tmp_path / 'h2'}"]])[0]
    assert nxt.returncode == 0 and "Traceback" not in nxt.stderr, nxt.stderr[-3000:]
    assert f"taking over a claim left by a process that ended without releasing it (pid {holder.pid}" in nxt.stdout
    assert _check_edit_folder(out, world["refs"]) == "1.0"


# -- train: one hydra.run.dir --------------------------------------------------------------------------------------
TRAIN = ["debug=smoke", "~logger", "callbacks.edit_grid=null", "trainer.limit_val_batches=0", "model.n_iter=2"]


@pytest.mark.slow
def test_train_runs_started_together_on_one_run_dir(tmp_path):
    run_dir, cache = tmp_path / "run", tmp_path / "cache"
    lrs = ["0.1", "0.2", "0.1", "0.2"]
    procs = race(
        tmp_path,
        [
            ["train", *TRAIN, f"model.optimizer.lr={lr}", f"dataset.cache_dir={cache}", f"hydra.run.dir={run_dir}"]
            for lr in lrs
        ],
    )
    lr_of = lambda p: next(a.split("=")[1] for a in p.args if a.startswith("model.optimizer.lr="))  # noqa: E731
    ok = check_outcome(procs, key=lr_of)
    lr = lr_of(ok[0])
    for p in procs:
        if p.returncode != 0 and lr_of(p) != lr:
            assert "another training run" in error_lines(p)[0]
    # every file of the folder is the winner's: its config, its stamp, its h-function (= the same run made alone)
    assert f"lr: {lr}" in (run_dir / ".hydra" / "config.yaml").read_text()
    assert f"model.optimizer.lr={lr}" in (run_dir / ".hydra" / "overrides.yaml").read_text()
    assert not (run_dir / claims.LOCK).exists() and not list(run_dir.rglob(".*.tmp"))
    got = torch.load(run_dir / "checkpoints" / "hfunction.pt", weights_only=True)
    _, ref = train_task.train(
        compose(
            "train", TRAIN + [f"model.optimizer.lr={lr}", f"dataset.cache_dir={cache}"], output_dir=tmp_path / "ref"
        )
    )
    want = ref["module"].hfunc.state_dict()
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert ref["trainer"].global_step == last["global_step"] > 0
    assert max((got["state_dict"][n] - want[n]).abs().max().item() for n in want) < 1e-6
    assert json.loads((run_dir / claims.RUN_STAMP).read_text())["task"] == "train"


# -- the inversion cache: one folder, four builders -------------------------------------------------------------------
@pytest.mark.slow
def test_cache_builders_started_together_write_each_entry_once(tmp_path):
    from faults import tiny_cache

    procs = race(tmp_path, [["cache", tmp_path / "shared"]] * N)
    for p in procs:
        assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr[-3000:]
    computed = [e for p in procs for e in json.loads(p.stdout.strip().splitlines()[-1])["computed"]]
    cache, sources = tiny_cache(tmp_path / "shared")
    assert sorted(computed) == sorted(s.id for s in sources)  # each entry computed (and written) by one builder
    assert any("waiting for another process that builds it" in p.stderr for p in procs)  # they did meet
    alone, _ = tiny_cache(tmp_path / "alone")
    alone.build(sources)
    for s in sources:  # identical to a build with no contender, byte for byte, and whole
        assert cache.path_for(s).read_bytes() == alone.path_for(s).read_bytes()
        assert load_entry(cache.path_for(s))["id"] == s.id
    assert sorted(p.name for p in cache.dir.iterdir()) == sorted(cache.path_for(s).name for s in sources)


# -- discover: one output_dir ---------------------------------------------------------------------------------------
def discover_args(world, tmp: Path, out: Path, *extra: str) -> list[str]:
    return [
        "arch=tiny_ddpm",
        "method=pca",
        "method.k=1",
        f"input_dir={world['dir'] / 'faces'}",
        "n_images=4",
        "plan.n_inv=4",
        "plan.n_gen=4",
        "plan.t_edit=500",
        "plan.t_boost=0",
        "judge=none",
        f"cache_dir={world['dir'] / 'dcache'}",
        f"output_dir={out}",
        *extra,
    ]


@pytest.mark.slow
def test_discover_runs_started_together_on_one_output_dir(world, tmp_path):
    """discover claims its output folder like train and edit: of four runs started together one writes the
    directions, the others are refused in one line (in progress, or the directions are there already)."""
    out = tmp_path / "out"
    procs = race(
        tmp_path,
        [["discover", *discover_args(world, tmp_path, out, f"hydra.run.dir={tmp_path / f'h{i}'}")] for i in range(N)],
    )
    for p in procs:
        assert "Traceback" not in p.stderr, p.stderr[-3000:]
        if p.returncode != 0:
            (err,) = error_lines(p)
            assert p.returncode == 2 and (
                "a discover run with the same settings is in progress there" in err or "already holds directions" in err
            ), err
    assert sum(p.returncode == 0 for p in procs) == 1, [(p.returncode, error_lines(p)) for p in procs]
    assert any("in progress" in e for p in procs for e in error_lines(p)), [error_lines(p) for p in procs]
    summary = json.loads((out / "directions.json").read_text())
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [r["file"] for r in summary["directions"]] + ["directions.json", "grid.png"]
    )  # no lock, no tmp


@pytest.mark.slow
def test_kill_9_of_a_discover_holder_lets_the_next_run_take_over(world, tmp_path):
    out, marker = tmp_path / "out", tmp_path / "holding"
    args = discover_args(world, tmp_path, out, "overwrite=true")
    holder = subprocess.Popen(
        [
            sys.executable,
            str(TESTS / "racer.py"),
            "-",
            "hold_discover",
            str(marker),
            *args,
            f"hydra.run.dir={tmp_path / 'h0'}",
        ],
        cwd=ROOT,
        env=env(),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not marker.exists():
            assert holder.poll() is None and time.monotonic() < deadline, holder.communicate()[1][-3000:]
            time.sleep(0.05)
        rec = json.loads((out / claims.LOCK).read_text())
        assert rec["pid"] == holder.pid and rec["task"] == "discover"
        held = sorted(p.name for p in out.iterdir())
        # overwrite=true does not reach a folder in use: refused in one line naming the holder, nothing touched
        refused = race(tmp_path, [["discover", *args, f"hydra.run.dir={tmp_path / 'h1'}"]])[0]
        want = (
            f"error: {out} is in use: a discover run with the same settings is in progress there (pid "
            f"{holder.pid} on {rec['host']}, since {rec['since']}); wait for it to end, or choose another output_dir"
        )
        assert refused.returncode == 2 and error_lines(refused) == [want], refused.stderr[-2000:]
        assert sorted(p.name for p in out.iterdir()) == held
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert holder.returncode == -signal.SIGKILL and (out / claims.LOCK).exists()  # the dead holder's record stays
    nxt = race(tmp_path, [["discover", *args, f"hydra.run.dir={tmp_path / 'h2'}"]])[0]
    assert nxt.returncode == 0 and "Traceback" not in nxt.stderr, nxt.stderr[-3000:]
    assert (
        f"taking over a claim left by a process that ended without releasing it (pid {holder.pid}"
        in nxt.stdout + nxt.stderr
    )
    assert (out / "directions.json").is_file() and not (out / claims.LOCK).exists()
