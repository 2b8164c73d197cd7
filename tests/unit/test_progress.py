"""Progress in any output: a bar on a terminal, timed lines (step, total, ETA, key metric) in a log file or pipe."""
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyrp.utils.progress import LineTicker, Progress, modes

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("env,expected", [("bar", (True, False)), ("lines", (False, True)), ("both", (True, True)),
                                          ("off", (False, False)), ("auto", (False, True))])
def test_modes(monkeypatch, env, expected):
    monkeypatch.setenv("ASYRP_PROGRESS", env)  # under pytest neither stdout nor stderr is a terminal
    assert modes() == expected


def test_lines_carry_step_total_eta_and_metric(monkeypatch, caplog):
    monkeypatch.setenv("ASYRP_PROGRESS", "lines")
    with caplog.at_level(logging.INFO, logger="asyrp.progress"):
        with Progress(4, "edit", "img", every=0) as p:
            for i in range(4):
                p.update(1, loss=0.5 / (i + 1))
    lines = [r.getMessage() for r in caplog.records if r.name == "asyrp.progress"]
    assert lines[0].startswith("edit: 1/4 img (25%)") and "ETA" in lines[0] and "loss=0.5" in lines[0]
    assert lines[-1].startswith("edit: 4/4 img (100%)") and lines[-1].endswith("(done)") and "loss=0.125" in lines[-1]


def test_ticker_waits_every_seconds(caplog):
    t = LineTicker(100, "train", "batch", every=3600)
    with caplog.at_level(logging.INFO, logger="asyrp.progress"):
        for i in range(10):
            t.set(i + 1)
        t.close()
    lines = [r.getMessage() for r in caplog.records if r.name == "asyrp.progress"]
    assert lines == [lines[-1]] and lines[-1].startswith("train: 10/100 batch (10%)") and lines[-1].endswith("(stopped)")


def test_train_and_edit_print_progress_lines_into_a_pipe(tmp_path):
    """train.py and edit.py with their output in a pipe (as in `make demo 2>&1 | cat`): progress lines, no bar."""
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", ASYRP_PROGRESS_EVERY="0")
    env.pop("ASYRP_PROGRESS", None)
    out = tmp_path / "run"
    p = subprocess.run([sys.executable, "train.py", "debug=smoke", "~logger", "callbacks.edit_grid=null",
                        "trainer.enable_progress_bar=true",  # smoke switches it off
                        f"dataset.cache_dir={tmp_path / 'cache'}", f"hydra.run.dir={out}"],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]
    lines = p.stdout.splitlines()
    cache = [s for s in lines if "inversion cache: " in s]
    train = [s for s in lines if "train: " in s and " batch" in s]
    assert cache and "/4 img" in cache[-1] and cache[-1].endswith("(done)")
    assert train and "ETA" in train[0] and "step=" in train[0] and "loss" in train[0] and train[-1].endswith("(done)")
    assert "\r" not in p.stdout  # no bar redraws in a pipe
    p = subprocess.run([sys.executable, "edit.py", "arch=tiny_ddpm", f"checkpoint={out / 'checkpoints' / 'hfunction.pt'}",
                        "n_random=2", "batch_size=1", f"hydra.run.dir={tmp_path / 'edit'}"],
                       cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:]
    edit = [s for s in p.stdout.splitlines() if "edit: " in s and " img" in s]
    assert edit and edit[0].split("edit: ")[1].startswith("1/2 img") and edit[-1].endswith("(done)")


def test_a_long_first_step_is_not_silent(caplog):
    """The ticker's own thread writes a line every `every` seconds even while no step finishes."""
    import time

    def lines():
        return [r.getMessage() for r in caplog.records if r.name == "asyrp.progress"]

    with caplog.at_level(logging.INFO, logger="asyrp.progress"):
        t = LineTicker(10, "edit", "img", every=0.05)
        deadline = time.monotonic() + 60  # a loaded machine may wake the thread late: wait for the lines, not a time
        while len(lines()) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        t.close()
    lines = lines()
    assert len(lines) >= 3 and all(s.startswith("edit: 0/10 img (0%)") for s in lines)
    assert "elapsed" in lines[-2] and lines[-1].endswith("(stopped)")
