"""Sweeps on asyrp's sweeper (asyrp/tasks/sweeper.py): trials side by side through Hydra's joblib launcher, and a
sweep killed mid-trial (a real SIGKILL) that the same command resumes without repeating a finished trial."""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import needs_sweep

ROOT = Path(__file__).resolve().parents[2]
SMOKE = ["debug=smoke", "logger=csv", "callbacks.edit_grid=null", "trainer.limit_val_batches=0"]
ENV = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")

pytestmark = [pytest.mark.slow, needs_sweep]


def train(*args: str) -> list[str]:
    return [sys.executable, "train.py", "-m", *args]


def study_trials(journal: Path, name: str):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    return optuna.load_study(study_name=name, storage=JournalStorage(JournalFileBackend(str(journal)))).trials


def test_two_workers_run_trials_side_by_side_one_row_per_trial_and_strength(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="needs pip install -e '.[joblib]'")
    from asyrp.synthfaces.data import write_split

    select = write_split(tmp_path / "select", seed=3, n=2, exclude={"glasses": "True"})
    sweep = tmp_path / "sweep"
    args = [
        "hparams_search=edit_quality",
        "experiment=synthfaces_glasses",
        *SMOKE,
        "plan.t0=999",
        "edit_quality.strengths=[0.8,1.2]",
        f"edit_quality.input_dir={select}",
        "trials=joblib",
        "trials.workers=2",
        "trials.threads=1",
        f"hydra.sweep.dir={sweep}",
        f"paths.cache_dir={tmp_path / 'cache'}",
    ]
    p = subprocess.run(train(*args), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "is launching 2 jobs" in p.stdout + p.stderr  # one batch of two trials at once
    progress = sorted(ln for ln in p.stderr.splitlines() if ln.startswith("sweep: "))
    assert [ln.split(" (value")[0] for ln in progress] == [
        "sweep: study edit_quality_synthfaces_glasses: 2 of 2 trials done or running",
        "sweep: trial 0 done",  # from each worker process
        "sweep: trial 1 done",
    ], progress
    with open(sweep / "edit_quality.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted((r["trial"], r["strength"]) for r in rows) == [(t, s) for t in "01" for s in ("0.8", "1.2")]
    for trial in "01":  # each trial in its own folder, with its own thread budget
        mine = [r for r in rows if r["trial"] == trial]
        assert {r["run_dir"] for r in mine} == {str(sweep / trial)}
        assert len(list((sweep / trial / "select_edits").glob("face_*.png"))) == 2 * 2
        hydra_yaml = (sweep / trial / ".hydra" / "hydra.yaml").read_text()
        assert "OMP_NUM_THREADS: '1'" in hydra_yaml and f"ASYRP_TRIAL: '{trial}'" in hydra_yaml
    trials = study_trials(sweep / "study.journal", "edit_quality_synthfaces_glasses")
    assert [t.state.name for t in trials] == ["COMPLETE", "COMPLETE"]
    for t in trials:  # the study's value is the trial's best strength's objective in the table
        best = max(float(r["edit/objective"]) for r in rows if r["trial"] == str(t.number))
        assert t.value == pytest.approx(best, abs=1e-3)


def wait_until(check, proc: subprocess.Popen, log: Path, timeout: float = 600) -> None:
    t_end = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > t_end:
            proc.kill()
            pytest.fail(f"the sweep ended or hung before the kill point: {log.read_text()[-3000:]}")
        time.sleep(0.2)


def test_a_sweep_killed_mid_trial_resumes_without_repeating_a_finished_trial(tmp_path):
    sweep, log = tmp_path / "sweep", tmp_path / "first.log"
    smoke = [a for a in SMOKE if "limit_val" not in a]  # asyrp_optuna optimises a validation metric
    args = train("hparams_search=asyrp_optuna", *smoke, "n_trials=3", f"dataset.cache_dir={tmp_path / 'cache'}")
    args.append(f"hydra.sweep.dir={sweep}")
    with open(log, "w") as fh:
        proc = subprocess.Popen(args, cwd=ROOT, env=ENV, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    # trial 0 finished, trial 1 started (its folder has its config): kill the whole sweep at once
    wait_until(lambda: (sweep / "1" / ".hydra" / "config.yaml").is_file(), proc, log)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    trials = study_trials(sweep / "study.journal", "asyrp_smiling")
    assert [t.state.name for t in trials] == ["COMPLETE", "RUNNING"]
    first = (sweep / "0" / "checkpoints" / "hfunction.pt").stat().st_mtime_ns
    killed_lr = trials[1].params["model.optimizer.lr"]

    p = subprocess.run(args, cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    out = p.stdout + p.stderr
    assert (
        "trials [1] stopped while running (their sweep was killed or exited): they run again, each in its folder" in out
    )
    assert out.count("Launching 1 jobs locally") == 2  # only the two trials still to do
    trials = study_trials(sweep / "study.journal", "asyrp_smiling")
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    rerun = trials[2]
    assert rerun.user_attrs["rerun_of"] == 1 and rerun.params["model.optimizer.lr"] == killed_lr
    assert (sweep / "0" / "checkpoints" / "hfunction.pt").stat().st_mtime_ns == first  # not trained again
    assert (sweep / "1" / "checkpoints" / "hfunction.pt").is_file() and not (sweep / "2").exists()
    assert (sweep / "3" / "checkpoints" / "hfunction.pt").is_file()
    assert "n_complete: 3" in (sweep / "optimization_results.yaml").read_text()


def test_a_bad_storage_or_a_study_of_another_space_stops_the_sweep_in_one_line_before_any_trial(tmp_path):
    from asyrp.tasks import study as st

    base = train("hparams_search=asyrp_optuna", *SMOKE)
    bad = "sqlite:////nonexistent-asyrp/study.db"
    p = subprocess.run(
        [*base, f"hydra.sweep.dir={tmp_path / 'a'}", f"hydra.sweeper.storage={bad}"],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=300,
    )
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert len(errors) == 1 and errors[0].startswith(f"error: hydra.sweeper.storage={bad}: the study storage cannot")
    assert not (tmp_path / "a" / "0").exists()
    # a study of that name already holds another search space: refused, nothing of it touched
    journal = tmp_path / "b" / "study.journal"
    st.open_study(st.open_storage(str(journal)), "asyrp_smiling", ["maximize"], None, {"plan.t0": "choice(400)"})
    p = subprocess.run(
        [*base, f"hydra.sweep.dir={tmp_path / 'b'}"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300
    )
    errors = [ln for ln in p.stderr.splitlines() if ln.startswith("error:")]
    assert p.returncode == 2 and len(errors) == 1, p.stderr[-3000:]
    assert errors[0].startswith("error: study asyrp_smiling in hydra.sweeper.storage already holds trials of another")
    again = st.open_study(
        st.open_storage(str(journal)), "asyrp_smiling", ["maximize"], None, {"plan.t0": "choice(400)"}
    )
    assert again.trials == [] and not (tmp_path / "b" / "0").exists()


def test_a_run_resumed_after_its_training_ended_still_reports_its_validation_metric(tmp_path):
    """A trial killed after its training (last.ckpt at the end) resumes in its folder: fit runs no loop, so the run
    measures the restored weights itself (what asyrp_optuna optimises)."""
    from asyrp.config import compose
    from asyrp.tasks.train import train as train_task

    over = ["debug=smoke", "logger=csv", "callbacks.edit_grid=null", f"dataset.cache_dir={tmp_path / 'cache'}"]
    first, done = train_task(compose("train", over, output_dir=tmp_path / "run"))
    again, objects = train_task(compose("train", over, output_dir=tmp_path / "run"))
    assert objects["trainer"].global_step == done["trainer"].global_step > 0  # restored at its end, not trained on
    assert again["val/clip_direction"] == pytest.approx(first["val/clip_direction"], abs=1e-5)
