"""train.py end to end: the smoke run, one-line errors for bad input, resume from last.ckpt, the Optuna sweep."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import needs_sweep

from asyrp.config import compose
from asyrp.ops.cli import run_cli
from asyrp.tasks.train import train

ROOT = Path(__file__).resolve().parents[2]


def run_script(*args: str, cwd: Path = ROOT, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, WANDB_MODE="offline", OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_smoke_run_from_the_command_line(tmp_path, cache_dir):
    out = tmp_path / "run"
    proc = run_script("train.py", "debug=smoke", f"dataset.cache_dir={cache_dir}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ck = out / "checkpoints"
    assert (
        (ck / "hfunction.pt").is_file() and (ck / "hfunction_official.pth").is_file() and (ck / "last.ckpt").is_file()
    )
    payload = torch.load(ck / "hfunction.pt", weights_only=True)
    assert payload["edit"]["t_edit"] == 500 and payload["arch"]["name"] == "tiny_ddpm"
    assert payload["h_shape"] and payload["emb_dim"] and payload["attribute"]["target"] == ["smiling face"]
    from asyrp.grid import grid_layout

    lay = grid_layout(sorted((out / "images").glob("*.png"))[-1])  # source | reconstruction | edit, 32 px -> 128
    assert (
        lay["columns"] == 3 and lay["column_labels"][:2] == ["source", "reconstruction"] and lay["cell"] == [128, 128]
    )
    assert lay["column_labels"][2].startswith("edit: ") and " x1" in lay["column_labels"][2] and "step" in lay["title"]
    metrics = (out / "csv" / "metrics.csv").read_text()
    assert "train/loss_step" in metrics and "train/lr" in metrics and "val/clip_direction" in metrics


def test_training_folder_accounts_for_every_file(tmp_path, cache_dir):
    """inputs.json of the run lists every file of dataset.path: used (an animated GIF too) or skipped, with a reason."""
    import json

    import numpy as np
    from PIL import Image

    data = tmp_path / "faces"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(data / f"{i}.png")
    frames = [Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)) for _ in range(2)]
    frames[0].save(data / "2.gif", save_all=True, append_images=frames[1:])
    (data / "00_notes.txt").write_text("hello")
    Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(data / "3.png")
    cfg = compose(
        "train",
        [
            "debug=smoke",
            "~logger",
            "dataset.kind=folder",
            f"dataset.path={data}",
            "dataset.n_images=3",
            f"dataset.cache_dir={cache_dir}",
            "++train=false",
        ],
        output_dir=tmp_path / "run",
    )
    train(cfg)
    acc = json.loads((tmp_path / "run" / "inputs.json").read_text())
    assert [Path(p).name for p in acc["used"]] == ["0.png", "1.png", "2.gif"]
    assert [(Path(s["path"]).name, s["reason"]) for s in acc["skipped"]] == [
        ("00_notes.txt", "not an image (Pillow cannot identify it)"),
        ("3.png", "not needed: n_images=3 usable images come before it"),
    ]


def test_bad_config_is_one_line_exit_2_no_output(tmp_path):
    out = tmp_path / "run"
    proc = run_script("train.py", "debug=smoke", "plan.t_edit=1500", f"hydra.run.dir={out}")
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    err = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(err) == 1 and "t_edit=1500" in err[0] and "plan.t_edit" in err[0]
    assert not (out / "checkpoints").exists()


@pytest.mark.parametrize(
    "override,needle",
    [
        ("plan.n_gen=1", "n_gen=1"),
        ("ckpt_path=/nonexistent/last.ckpt", "ckpt_path"),
        ("dataset=celeba_hq", "image folder not found"),
        ("arch=celeba_hq", "backbone checkpoint"),
        ("model.optimizer.lr=-1", "lr"),
    ],
)
def test_impossible_inputs_raise_our_error(override, needle, tmp_path, capsys):
    cfg = compose("train", ["debug=smoke", override, "dataset.path=/nonexistent"], output_dir=tmp_path)
    with pytest.raises(SystemExit) as exc:
        run_cli(train, cfg)
    assert exc.value.code == 2
    assert needle in capsys.readouterr().err
    assert not (tmp_path / "checkpoints").exists()


def test_resume_mid_epoch_matches_an_uninterrupted_run(tmp_path, cache_dir):
    common = [
        "debug=smoke",
        "~logger",
        f"dataset.cache_dir={cache_dir}",
        "dataset.batch_size=1",
        "model.n_iter=2",
        "callbacks.edit_grid=null",
        "trainer.limit_val_batches=0",
        "callbacks.model_checkpoint.every_n_train_steps=2",
        "model.scheduler.step_size=1",
        "model.scheduler.gamma=0.5",
    ]
    _, full = train(compose("train", common, output_dir=tmp_path / "full"))
    assert full["trainer"].global_step == 16  # 2 epochs x 4 batches x 2 timesteps
    # "killed" after 3 of 4 batches of the first epoch
    _, part = train(compose("train", common + ["+trainer.max_steps=6"], output_dir=tmp_path / "part"))
    assert part["trainer"].global_step == 6
    last = tmp_path / "part" / "checkpoints" / "last.ckpt"
    _, resumed = train(compose("train", common + [f"ckpt_path={last}"], output_dir=tmp_path / "resumed"))
    assert resumed["trainer"].global_step == 16
    a, b = full["module"].hfunc.state_dict(), resumed["module"].hfunc.state_dict()
    assert max((a[k] - b[k]).abs().max().item() for k in a) < 1e-6
    assert resumed["module"].optimizers().param_groups[0]["lr"] == full["module"].optimizers().param_groups[0]["lr"]


@pytest.mark.slow
@needs_sweep
def test_optuna_sweep_runs_two_trials(tmp_path, cache_dir):
    out = tmp_path / "sweep"
    proc = run_script(
        "train.py",
        "-m",
        "hparams_search=asyrp_optuna",
        "debug=smoke",
        f"dataset.cache_dir={cache_dir}",
        f"hydra.sweep.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (out / "optimization_results.yaml").is_file()
    assert len(list(out.glob("*/checkpoints/hfunction.pt"))) == 2
    # a progress line per finished trial (the output is a pipe here): trial k of n, its value, elapsed, ETA
    trials = [s for s in proc.stderr.splitlines() if s.startswith("sweep: trial ")]
    assert [s.split(" done")[0] for s in trials] == ["sweep: trial 1/2", "sweep: trial 2/2"], proc.stderr[-2000:]
    assert "ETA" in trials[0] and "(value " in trials[0]
