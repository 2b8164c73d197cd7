"""The entry points and scripts run as a user runs them, one subprocess each: output in a pipe, exit codes and one-line
errors, the interval and recipes scripts, a tiny Optuna sweep. Each test was moved here from the unit or integration
file of the module it exercises (progress, edit, app, synthfaces data, interval, sweep)."""

from __future__ import annotations

import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import images, needs_sweep

from asyrp.interval import IntervalCurves, choose_t_boost, choose_t_edit
from asyrp.ops.io import atomic_write_png

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def faces(tmp_path) -> Path:
    folder = tmp_path / "faces"
    folder.mkdir()
    for i, img in enumerate(images(3, size=40, seed=1)):  # another size than the backbone's 32: resized on load
        atomic_write_png(img, folder / f"face_{i}.png")
    return folder


# == progress lines (from tests/unit/test_progress.py) ================================================================
def test_train_and_edit_print_progress_lines_into_a_pipe(tmp_path):
    """train.py and edit.py with their output in a pipe (as in `make demo 2>&1 | cat`): progress lines, no bar."""
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1", ASYRP_PROGRESS_EVERY="0")
    env.pop("ASYRP_PROGRESS", None)
    out = tmp_path / "run"
    p = subprocess.run(
        [
            sys.executable,
            "train.py",
            "debug=smoke",
            "~logger",
            "callbacks.edit_grid=null",
            "trainer.enable_progress_bar=true",  # smoke switches it off
            f"dataset.cache_dir={tmp_path / 'cache'}",
            f"hydra.run.dir={out}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:]
    lines = p.stdout.splitlines()
    cache = [s for s in lines if "inversion cache: " in s]
    train = [s for s in lines if "train: " in s and " batch" in s]
    assert cache and "/4 img" in cache[-1] and cache[-1].endswith("(done)")
    assert train and "ETA" in train[0] and "step=" in train[0] and "loss" in train[0] and train[-1].endswith("(done)")
    assert "\r" not in p.stdout  # no bar redraws in a pipe
    p = subprocess.run(
        [
            sys.executable,
            "edit.py",
            "arch=tiny_ddpm",
            f"checkpoint={out / 'checkpoints' / 'hfunction.pt'}",
            "n_random=2",
            "batch_size=1",
            f"hydra.run.dir={tmp_path / 'edit'}",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-3000:]
    edit = [s for s in p.stdout.splitlines() if "edit: " in s and " img" in s]
    assert edit and edit[0].split("edit: ")[1].startswith("1/2 img") and edit[-1].endswith("(done)")


# == edit.py (from tests/integration/test_edit_task.py) ===============================================================
def test_edit_script_exit_code(tmp_path, faces):
    # one error line, exit 2, no traceback, nothing written
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [
            sys.executable,
            "edit.py",
            "arch=tiny_ddpm",
            f"checkpoint={tmp_path / 'missing.pt'}",
            f"input_dir={faces}",
            f"hydra.run.dir={tmp_path / 'run'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "h-function checkpoint not found" in proc.stderr


# == app.py (from tests/integration/test_app.py) ======================================================================
def test_missing_default_hfunction_says_how_to_make_it(tmp_path):
    pytest.importorskip("gradio")  # app.py without it is another error (exit 6)
    env = dict(os.environ, ASYRP_ROOT=str(tmp_path), OMP_NUM_THREADS="1", GRADIO_ANALYTICS_ENABLED="False")
    p = subprocess.run(
        [sys.executable, str(ROOT / "app.py"), f"hydra.run.dir={tmp_path / 'run'}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    err = [s for s in p.stderr.splitlines() if s.startswith("error:")]
    assert p.returncode == 2 and len(err) == 1 and "Traceback" not in p.stderr, p.stderr[-2000:]
    assert "demo/smiling/train_s0/checkpoints/hfunction.pt" in err[0] and "make demo" in err[0]


# == the synthfaces folder writer (from tests/integration/test_synthfaces.py) =========================================
def test_folder_writer_only_and_a_contradiction(tmp_path):
    """--only picks the faces (the default smiling exclusion is dropped); a value both excluded and required is one
    error at once, not an endless search for a face that cannot exist."""
    import json
    import subprocess
    import sys

    from asyrp.ops.errors import AsyrpUserError
    from asyrp.synthfaces.data import write_split

    def cli(*args):
        return subprocess.run(
            [sys.executable, "-m", "asyrp.synthfaces.data", "--n-test", "0", *args],
            capture_output=True,
            text=True,
            timeout=120,
        )

    assert cli("--out", str(tmp_path / "s"), "--only", "mouth=smiling", "--n-train", "3").returncode == 0
    attrs = json.loads((tmp_path / "s" / "train" / "attributes.json").read_text())
    assert len(attrs) == 3 and all(v["mouth"] == "smiling" for v in attrs.values())
    bad = cli("--out", str(tmp_path / "b"), "--only", "mouth=smiling", "--exclude", "mouth=smiling", "--n-train", "3")
    assert bad.returncode == 2 and "both excluded and required" in bad.stderr and "Traceback" not in bad.stderr
    with pytest.raises(AsyrpUserError, match="hat=True"):
        write_split(tmp_path / "c", seed=1, n=1, exclude={"hat": "True"}, only={"hat": "True"})


# == experiments/interval.py (from tests/integration/test_interval.py) ================================================
def test_interval_script_runs_offline(tmp_path):
    """experiments/interval.py on a folder of images with the tiny random backbone and the offline distance."""
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, img in enumerate(images(3)):
        arr = ((img.permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
        Image.fromarray(arr).save(folder / f"{i}.png")
    out = tmp_path / "out"
    cmd = [
        sys.executable,
        str(ROOT / "experiments" / "interval.py"),
        "--tiny",
        "--images",
        str(folder),
        "--image-size",
        "16",
        "--distance",
        "rmse",
        "--stride",
        "111",
        "--out",
        str(out),
    ]
    r = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr
    curves = IntervalCurves.load_csv(out / "interval_curves.csv")
    assert curves.t == list(range(0, 1000, 111)) and curves.n_images == 3
    assert (out / "interval_curves.png").is_file()
    # the printed values are the choice on the saved curves with the offline distance's own thresholds
    assert f"t_edit = {choose_t_edit(curves, 0.35)}" in r.stdout
    assert f"t_boost = {choose_t_boost(curves, 0.5)}" in r.stdout
    assert choose_t_boost(curves, 0.5) == 222  # RMSE(x, x_t) first reaches 0.5 between t = 111 and 222


# == the edit-quality sweep and experiments/recipes.py (from tests/integration/test_sweep.py) =========================
@pytest.mark.slow
@needs_sweep
def test_tiny_edit_quality_sweep_tables_every_trial_and_inverts_once(tmp_path):
    from asyrp.synthfaces.data import write_split

    select = write_split(tmp_path / "data" / "select", seed=3, n=4, exclude={"glasses": "True"})
    sweep = tmp_path / "sweep"
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    # t0 fixed: the second trial must find every inversion (training and selection images) in the cache
    proc = subprocess.run(
        [
            sys.executable,
            "train.py",
            "-m",
            "hparams_search=edit_quality",
            "experiment=synthfaces_glasses",
            "debug=smoke",
            "plan.t0=999",
            f"edit_quality.input_dir={select}",
            f"hydra.sweep.dir={sweep}",
            f"paths.cache_dir={tmp_path / 'cache'}",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(sweep / "edit_quality.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    strengths = [0.6, 0.8, 1.0, 1.2, 1.4]  # conf/hparams_search/edit_quality.yaml: every trial edits at each
    assert [r["trial"] for r in rows] == ["0"] * 5 + ["1"] * 5
    assert [float(r["strength"]) for r in rows] == strengths * 2
    for trial in ("0", "1"):  # the trial's value is its best strength's
        mine = [r for r in rows if r["trial"] == trial]
        assert [r["chosen"] for r in mine].count("True") == 1
        chosen = next(r for r in mine if r["chosen"] == "True")
        assert float(chosen["edit/objective"]) == max(float(r["edit/objective"]) for r in mine)
    for r in rows:
        assert 0.0 <= float(r["edit/success"]) <= 1.0 and 0.0 <= float(r["edit/preserved"]) <= 1.0
        assert float(r["edit/objective"]) == pytest.approx(
            min(float(r["edit/success"]) - 0.8, float(r["edit/preserved"]) - 0.9), abs=1e-3
        )
        assert r["t0"] == "999" and 100 <= int(r["t_edit"]) <= 949 and r["edit/psnr_rec"] and r["edit/clip_direction"]
        assert len(list((Path(r["run_dir"]) / "select_edits").glob("face_*.png"))) == 4 * len(strengths)
    # the searched values differ between the trials and each trial trained with its own
    assert rows[0]["lr"] != rows[5]["lr"]
    # the best trial, as a ready command line, at the end of the sweep
    best = max(rows, key=lambda r: float(r["edit/objective"]))
    out = proc.stdout
    assert "edit_quality sweep done (2 trials" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith(f"best trial {best['trial']} ") and "python train.py " in last
    assert f"model.optimizer.lr={best['lr']}" in last and f"strength={best['strength']}" in last
    assert "hparams_search" not in last.split("python train.py", 1)[1]
    # inversions: trial 0 builds the training images' entries (walk cut at t_edit), the validation images' (full:
    # validation shows x_rec) and the selection split's, each once; trial 1 none
    log = proc.stdout + proc.stderr
    per_trial = log.split("Launching 1 jobs locally")
    assert len(per_trial) == 3
    builds = [x for x in per_trial[1].splitlines() if "computing" in x]
    assert len(builds) == 3 and per_trial[2].count("computing") == 0, builds


@pytest.mark.slow
def test_disentangle_table_end_to_end_on_tiny_settings(tmp_path):
    """experiments/disentangle_table.py on the shipped synthfaces models, shrunk (2 faces, 4 steps, 1 epoch, 1 seed):
    the row's target-vs-kept matrix, distance to the true render, passes and reverse edit; a rerun trains nothing."""
    import json

    cmd = [sys.executable, "experiments/disentangle_table.py", "--out", str(tmp_path / "out")]
    cmd += ["--data", str(tmp_path / "data"), "--attributes", "glasses", "--rows", "paper", "loco", "--seeds", "0"]
    cmd += ["--strengths", "0.5", "1.0", "--reverse", "glasses", "--no-compose", "--n-faces", "2", "--n-train", "2"]
    cmd += ["--extra", "dataset.n_images=2", "plan.n_inv=4", "plan.n_gen=4", "model.n_iter=1"]
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (row,) = [json.loads(x) for x in (tmp_path / "out" / "rows.jsonl").read_text().splitlines()]
    heads = {"mouth", "hair_colour", "hair_length", "hat", "skin", "background"}
    assert set(row["test"]["0"]) == {"success", "preserved"} | heads and row["chosen_strength"] in (0.5, 1.0)
    assert row["true"]["0"]["psnr"] > 0 and row["reverse"]["true"]["0"]["psnr"] > 0
    assert row["passes"][0] == 3 + 4 and row["passes"][1] > 7  # (n_inv - 1) + n_gen, plus the editing steps
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| glasses | paper | CLIP text only |" in md and "| glasses | paper | glasses=False |" in md
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "recipes.py" not in again.stderr and "glasses / paper: done" in again.stderr


@pytest.mark.slow
def test_recipes_script_chooses_strength_on_select_and_reports_test(tmp_path):
    """experiments/recipes.py on the shipped synthfaces models, shrunk (2 faces, 4 steps, 1 epoch): the strength is the
    one with the best worst-seed margin on select/, the reported rows are test/ at that strength."""
    import json

    from asyrp.synthfaces.data import write_split

    data = tmp_path / "data"
    rev = tmp_path / "smiling_faces"
    for split, seed in (("train", 1), ("select", 3), ("test", 2)):
        write_split(data / split, seed=seed, n=2, exclude={"mouth": "smiling"})
        if split != "train":
            write_split(rev / split, seed=seed, n=2, only={"mouth": "smiling"})
    out = tmp_path / "rec" / "smiling"
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    cmd = [
        sys.executable,
        "experiments/recipes.py",
        "--experiment",
        "synthfaces_smiling",
        "--data",
        str(data),
        "--out",
        str(out),
        "--seeds",
        "0",
        "1",
        "--strengths",
        "0.5",
        "1.0",
        "--reverse-data",
        str(rev),
        "--reverse-target",
        "mouth!=smiling",
        "--",
        "dataset.n_images=2",
        "plan.n_inv=4",
        "plan.n_gen=4",
        "model.n_iter=1",
        "plan.t0=400",
        "plan.t_edit=200",
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    margins = {
        st: sorted(
            next(r["margin"] for r in v["rows"] if r["split"] == "select" and r["strength"] == st)
            for v in s["seeds"].values()
        )
        for st in (0.5, 1.0)
    }
    assert s["chosen_strength"] == max(margins, key=margins.get)  # leximin: the worst seed first, then the next
    # the reverse edit: the same h-functions at minus the strengths on faces that smile, judged on mouth != smiling
    assert s["reverse_chosen_strength"] in (-0.5, -1.0) and s["reverse_target"] == "mouth!=smiling"
    for seed in ("0", "1"):
        r = s["reverse_test_at_chosen"][seed]
        assert r["strength"] == s["reverse_chosen_strength"] and r["edit/already_target"] == 0.0
    assert proc.stdout.count("reversed (mouth!=smiling) seed=") == 2
    # rerun: every training and every edit is found finished and reused; the same numbers come out
    again = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert again.returncode == 0 and "$ python" not in again.stdout
    assert json.loads((out / "summary.json").read_text())["test_at_chosen"] == s["test_at_chosen"]
    for seed in ("0", "1"):
        r = s["test_at_chosen"][seed]
        assert r["split"] == "test" and r["strength"] == s["chosen_strength"] and r["edit/n"] == 2.0
        assert 0 <= r["edit/success"] <= 1 and r["edit/psnr_rec"] > 0
    assert proc.stdout.count("recipes: synthfaces_smiling seed=") == 2
