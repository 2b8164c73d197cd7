"""hparams_search=edit_quality: a tiny sweep trains, edits a selection split, judges, tables and prints the best."""

import pytest

from asyrp.tasks.edit_quality import append_row, best_command, objective, read_table


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


def test_table_widens_and_best_command_drops_sweep_only_overrides(tmp_path):
    path = tmp_path / "t.csv"
    append_row(
        path,
        {
            "trial": 0,
            "overrides": "plan.t0=400 hparams_search=edit_quality edit_quality.strength=0.9",
            "strength": 0.9,
            "edit/objective": -0.1,
        },
    )
    append_row(
        path,
        {
            "trial": 1,
            "overrides": "plan.t0=500 experiment=synthfaces_hat hydra.sweep.dir=x",
            "strength": 1.1,
            "edit/objective": 0.05,
            "edit/lpips_rec": 0.1,
        },
    )
    rows = read_table(path)
    assert (
        [r["trial"] for r in rows] == ["0", "1"]
        and rows[0]["edit/lpips_rec"] == ""
        and rows[1]["edit/lpips_rec"] == "0.1"
    )
    line = best_command(path)
    assert "best trial 1" in line and "python train.py plan.t0=500 experiment=synthfaces_hat " in line
    assert "hydra.sweep.dir" not in line and "strength=1.1" in line


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
