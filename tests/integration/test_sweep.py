"""hparams_search=edit_quality: a tiny sweep trains, edits a selection split, judges, tables and prints the best."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import pytest

from asyrp.sweep import append_row, best_command, objective, read_table

ROOT = Path(__file__).resolve().parents[2]


def test_objective_is_the_margin_of_the_worse_target_or_clip_minus_drift():
    eq = {"target": {"success": 0.8, "preserved": 0.9}, "fidelity": {"psnr_floor": 25.0, "w_psnr": 0.02, "w_lpips": 1.0}}
    assert objective({"edit/success": 0.95, "edit/preserved": 0.92}, eq) == pytest.approx(0.02)
    assert objective({"edit/success": 0.70, "edit/preserved": 0.99}, eq) == pytest.approx(-0.10)
    assert objective({"edit/clip_direction": 0.3, "edit/psnr_rec": 30.0}, eq) == pytest.approx(0.3)
    assert objective({"edit/clip_direction": 0.3, "edit/psnr_rec": 20.0}, eq) == pytest.approx(0.2)
    assert objective({"edit/clip_direction": 0.3, "edit/psnr_rec": 9.0, "edit/lpips_rec": 0.25}, eq) == pytest.approx(0.05)


def test_table_widens_and_best_command_drops_sweep_only_overrides(tmp_path):
    path = tmp_path / "t.csv"
    append_row(path, {"trial": 0, "overrides": "model.t0=400 hparams_search=edit_quality edit_quality.strength=0.9",
                      "strength": 0.9, "edit/objective": -0.1})
    append_row(path, {"trial": 1, "overrides": "model.t0=500 experiment=synthfaces_hat hydra.sweep.dir=x",
                      "strength": 1.1, "edit/objective": 0.05, "edit/lpips_rec": 0.1})
    rows = read_table(path)
    assert [r["trial"] for r in rows] == ["0", "1"] and rows[0]["edit/lpips_rec"] == "" and rows[1]["edit/lpips_rec"] == "0.1"
    line = best_command(path)
    assert "best trial 1" in line and "python train.py model.t0=500 experiment=synthfaces_hat " in line
    assert "hydra.sweep.dir" not in line and "strength=1.1" in line


@pytest.mark.slow
def test_tiny_edit_quality_sweep_tables_every_trial_and_inverts_once(tmp_path):
    from asyrp.synthfaces.data import write_split

    select = write_split(tmp_path / "data" / "select", seed=3, n=4, exclude={"glasses": "True"})
    sweep = tmp_path / "sweep"
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    # t0 fixed: the second trial must find every inversion (training and selection images) in the cache
    proc = subprocess.run([sys.executable, "train.py", "-m", "hparams_search=edit_quality", "experiment=synthfaces_glasses",
                           "debug=smoke", "model.t0=999", f"edit_quality.input_dir={select}", f"hydra.sweep.dir={sweep}",
                           f"paths.cache_dir={tmp_path / 'cache'}"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
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
        assert float(r["edit/objective"]) == pytest.approx(min(float(r["edit/success"]) - 0.8,
                                                               float(r["edit/preserved"]) - 0.9), abs=1e-3)
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
    # inversions: trial 0 builds the training images' and the selection split's entries, trial 1 none
    log = proc.stdout + proc.stderr
    per_trial = log.split("Launching 1 jobs locally")
    assert len(per_trial) == 3
    assert per_trial[1].count("computing") == 2 and per_trial[2].count("computing") == 0


def test_edit_quality_composes_with_every_synthfaces_experiment(tmp_path):
    from asyrp.utils.config import compose

    for attr in ("smiling", "frowning", "glasses", "hat", "blond_hair", "red_hair"):
        cfg = compose("train", ["hparams_search=edit_quality", f"experiment=synthfaces_{attr}"], output_dir=tmp_path)
        assert cfg.optimized_metric == "edit/objective" and cfg.attribute.oracle_target
        assert str(cfg.edit_quality.input_dir).endswith("/select")
        assert cfg.hydra.sweeper.custom_search_space == "asyrp.sweep.t_edit_below_t0"
        assert set(cfg.hydra.sweeper.params) >= {"model.t0", "model.optimizer.lr", "model.loss.w_recon", "model.n_iter",
                                                 "model.loss.clip_reference"}
        assert len(cfg.edit_quality.strengths) >= 3  # the edit strength: searched inside every trial


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
    cmd = [sys.executable, "experiments/recipes.py", "--experiment", "synthfaces_smiling", "--data", str(data),
           "--out", str(out), "--seeds", "0", "1", "--strengths", "0.5", "1.0", "--reverse-data", str(rev),
           "--reverse-target", "mouth!=smiling", "--", "dataset.n_images=2", "model.n_inv=4", "model.n_gen=4",
           "model.n_iter=1", "model.t0=400", "edit_interval.t_edit=200"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    s = json.loads((out / "summary.json").read_text())
    margins = {st: sorted(next(r["margin"] for r in v["rows"] if r["split"] == "select" and r["strength"] == st)
                          for v in s["seeds"].values()) for st in (0.5, 1.0)}
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
