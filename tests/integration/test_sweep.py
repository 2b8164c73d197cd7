"""hparams_search=edit_quality: a tiny sweep trains, edits a selection split, judges, tables and prints the best."""

import json

import pytest
from helpers import needs_sweep

from asyrp.tasks.edit_quality import append_rows, best_command, objective, read_table


def test_objective_is_the_margin_of_the_worse_target_or_clip_minus_drift():
    eq = {
        "target": {"success": 0.8, "preserved": 0.9},
        "fidelity": {"psnr_floor": 25.0, "w_psnr": 0.02, "w_lpips": 1.0},
    }
    assert objective({"edit/success": 0.95, "edit/preserved": 0.92}, eq) == pytest.approx(0.02)
    assert objective({"edit/success": 0.70, "edit/preserved": 0.99}, eq) == pytest.approx(-0.10)
    assert objective({"edit/clip_direction": 0.3, "edit/psnr_rec": 30.0}, eq) == pytest.approx(0.3)
    assert objective({"edit/clip_direction": 0.3, "edit/psnr_rec": 20.0}, eq) == pytest.approx(0.2)
    assert objective({"edit/clip_direction": 0.3, "edit/psnr_rec": 9.0, "edit/lpips_rec": 0.25}, eq) == pytest.approx(
        0.05
    )


def test_table_widens_replaces_a_killed_attempt_and_best_command_drops_sweep_only_overrides(tmp_path):
    path = tmp_path / "t.csv"
    first = {"trial": 0, "overrides": "plan.t0=400 hparams_search=edit_quality edit_quality.strength=0.9"}
    append_rows(path, [{**first, "strength": 0.9, "edit/objective": -0.1, "run_dir": "s/0"}])
    killed = {"trial": 1, "overrides": "plan.t0=500", "strength": 0.7, "edit/objective": 0.9, "run_dir": "s/1"}
    append_rows(path, [killed])  # a trial killed after writing its rows: its rerun (same folder) replaces them
    rerun = {"trial": 2, "overrides": "plan.t0=500 experiment=synthfaces_hat hydra.sweep.dir=x trials=joblib"}
    append_rows(
        path,
        [
            {**rerun, "strength": 1.1, "edit/objective": 0.05, "edit/lpips_rec": 0.1, "run_dir": "s/1"},
            {**rerun, "strength": 1.3, "edit/objective": 0.01, "edit/lpips_rec": 0.2, "run_dir": "s/1"},
        ],
    )
    rows = read_table(path)
    assert [r["trial"] for r in rows] == ["0", "2", "2"]
    assert rows[0]["edit/lpips_rec"] == "" and rows[1]["edit/lpips_rec"] == "0.1"
    line = best_command(path)
    assert "best trial 2" in line and "python train.py plan.t0=500 experiment=synthfaces_hat " in line
    assert "hydra.sweep.dir" not in line and "trials=" not in line and "model.edit_strength=1.1  # then" in line


def test_edit_quality_composes_with_every_synthfaces_experiment(tmp_path):
    from asyrp.config import compose

    for attr in ("smiling", "frowning", "glasses", "hat", "blond_hair", "red_hair"):
        cfg = compose("train", ["hparams_search=edit_quality", f"experiment=synthfaces_{attr}"], output_dir=tmp_path)
        assert cfg.optimized_metric == "edit/objective" and cfg.attribute.oracle_target
        assert str(cfg.edit_quality.input_dir).endswith("/select")
        assert cfg.hydra.sweeper.custom_search_space == "asyrp.tasks.edit_quality.t_edit_below_t0"
        assert set(cfg.hydra.sweeper.params) >= {
            "plan.t0",
            "model.optimizer.lr",
            "model.loss.w_recon",
            "model.n_iter",
            "model.loss.clip_reference",
        }
        assert len(cfg.edit_quality.strengths) >= 3  # the edit strength: searched inside every trial


def test_a_sweep_trial_run_is_named_and_grouped_by_its_study(tmp_path, monkeypatch):
    from asyrp.config import compose

    over = ["logger=wandb", "hparams_search=edit_quality", "experiment=synthfaces_glasses"]
    alone = compose("train", over, output_dir=tmp_path)
    assert alone.logger.wandb.group == "synthfaces_glasses" and alone.logger.wandb.name == "train-synthfaces_glasses"
    # what asyrp's sweeper sets in each trial's environment (hydra.job.env_set)
    monkeypatch.setenv("ASYRP_STUDY", "edit_quality_synthfaces_glasses")
    monkeypatch.setenv("ASYRP_TRIAL_NAME", "edit_quality_synthfaces_glasses-trial3")
    cfg = compose("train", over, output_dir=tmp_path)
    assert cfg.logger.wandb.group == "edit_quality_synthfaces_glasses"
    assert cfg.logger.wandb.name == "edit_quality_synthfaces_glasses-trial3"


@needs_sweep
def test_the_study_summary_is_a_wandb_run_with_the_table_of_every_trial(tmp_path, monkeypatch):
    import wandb
    from omegaconf import OmegaConf

    from asyrp.tasks import study as st
    from asyrp.tasks.sweeper import log_study_table

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    study = st.open_study(None, "glasses", ["maximize"], None, {})
    for value in (0.2, 0.6, None):
        trial = study.ask()
        trial.suggest_float("model.optimizer.lr", 0.1, 0.2)
        st.record(study, trial.number, value)
    seen = {}
    real_init = wandb.init

    def init(**kw):
        seen.update(kw)
        return real_init(**kw)

    monkeypatch.setattr(wandb, "init", init)
    log_study_table(
        OmegaConf.create({"logger": {"wandb": {"project": "asyrp"}}, "hydra": {"sweep": {"dir": str(tmp_path)}}}), study
    )
    assert seen["group"] == "glasses" and seen["name"] == "glasses-summary"
    tables = list(tmp_path.glob("wandb/offline-run-*/files/media/table/study/trials_*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:3] == ["number", "state", "value_0"] and "model.optimizer.lr" in table["columns"]
    assert [r[:3] for r in table["data"]] == [[0, "COMPLETE", 0.2], [1, "COMPLETE", 0.6], [2, "FAIL", None]]
