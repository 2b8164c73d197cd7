"""Every shipped config composes; every experiment trains under debug=smoke (picks up whatever conf/experiment holds)."""

from pathlib import Path

import pytest
from helpers import tiny_directions
from hydra.utils import instantiate
from omegaconf import OmegaConf

from asyrp import build
from asyrp.config import CONF_DIR, compose
from asyrp.data import AsyrpDataModule
from asyrp.tasks.train import train

EXPERIMENTS = sorted(p.stem for p in (CONF_DIR / "experiment").glob("*.yaml"))


def names(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF_DIR / group).glob("*.yaml") if p.stem != "default")


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cache")


def test_default_train_config_matches_the_schema(tmp_path):
    cfg = compose("train", [], output_dir=tmp_path)
    for key in ("seed", "task_name", "tags", "ckpt_path", "train", "optimized_metric"):
        assert key in cfg
    assert set(cfg.dataset) >= {
        "name",
        "kind",
        "path",
        "n_images",
        "image_size",
        "batch_size",
        "num_workers",
        "cache_dir",
    }
    assert set(cfg.model) >= {"strength", "optimizer", "scheduler", "loss", "n_iter"}
    assert set(cfg.plan) >= {"n_inv", "n_gen", "t0", "t_edit", "t_boost", "spacing", "mode", "interval"}
    assert (cfg.plan.n_inv, cfg.plan.n_gen, cfg.plan.t0, cfg.model.optimizer.lr) == (40, 40, 999, 0.5)
    assert (cfg.plan.t_edit, cfg.plan.t_boost, cfg.plan.spacing, cfg.plan.mode) == (513, 167, "official", "asyrp")
    assert cfg.model.loss == {
        "w_clip": 1.0,
        "w_recon": 3.0,
        "recon_scale_by_text_cosine": True,
        "clip_reference": "x0",
        "w_id": 0.0,  # the identity loss, off as upstream
        "guide": {"classifier": None, "twins": None},  # guide=none: no classifier, no twins
    }
    assert str(cfg.identity.weights).endswith("model_ir_se50.pth")
    assert cfg.clip.model == "ViT-B-16" and cfg.trainer.max_epochs == cfg.model.n_iter
    assert str(cfg.paths.output_dir) == str(tmp_path)


@pytest.mark.parametrize("dataset", names("dataset"))
def test_dataset_configs(dataset, tmp_path):
    cfg = compose("train", [f"dataset={dataset}"], output_dir=tmp_path)
    dm = AsyrpDataModule(**OmegaConf.to_container(cfg.dataset, resolve=True))
    # every key of the config reaches the DataModule (an unknown key is an error, not swallowed)
    assert (dm.kind, dm.path, dm.n_images, dm.batch_size) == (
        cfg.dataset.kind,
        cfg.dataset.path,
        cfg.dataset.n_images,
        cfg.dataset.batch_size,
    )
    assert (dm.cache_dir, dm.n_val, dm.seed) == (cfg.dataset.cache_dir, cfg.dataset.n_val, cfg.dataset.seed)


def test_unknown_dataset_key_is_an_error(tmp_path):
    from asyrp.ops.errors import AsyrpUserError

    cfg = compose("train", ["+dataset.n_imgaes=3"], output_dir=tmp_path)
    with pytest.raises(AsyrpUserError, match="dataset.n_imgaes is not a dataset option"):
        AsyrpDataModule(**OmegaConf.to_container(cfg.dataset, resolve=True))


@pytest.mark.parametrize("trainer", names("trainer"))
def test_trainer_configs(trainer, tmp_path):
    cfg = compose("train", [f"trainer={trainer}"], output_dir=tmp_path)
    assert cfg.trainer.use_distributed_sampler is False
    if cfg.trainer.accelerator == "cpu":
        trainer = instantiate(cfg.trainer, logger=False)
        assert trainer.max_epochs == cfg.trainer.max_epochs and trainer.world_size >= 1


@pytest.mark.parametrize("logger", names("logger"))
def test_logger_configs(logger, tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    cfg = compose("train", [f"logger={logger}"], output_dir=tmp_path)
    assert build.instances(cfg.logger)


@pytest.mark.parametrize("callbacks", names("callbacks") + ["default"])
def test_callback_configs(callbacks, tmp_path):
    import pytorch_lightning as pl

    cfg = compose("train", [f"callbacks={callbacks}"], output_dir=tmp_path)
    made = build.instances(cfg.get("callbacks"))
    wanted = [c for c in (cfg.get("callbacks") or {}).values() if c is not None and "_target_" in c]
    assert len(made) == len(wanted) and all(isinstance(c, pl.Callback) for c in made)


@pytest.mark.parametrize("clip", names("clip"))
def test_clip_configs(clip, tmp_path):
    cfg = compose("train", [f"clip={clip}"], output_dir=tmp_path)
    assert cfg.clip.model_config or cfg.clip.pretrained


@pytest.mark.parametrize("guide", names("guide"))
def test_guide_configs(guide, tmp_path):
    cfg = compose("train", [f"guide={guide}"], output_dir=tmp_path)
    kinds = {k for k, v in cfg.model.loss.guide.items() if v is not None}  # the selected kind alone, none for none
    assert kinds == (set() if guide == "none" else {guide})


@pytest.mark.parametrize("constraint", names("constraint"))
def test_constraint_configs(constraint, tmp_path):
    cfg = compose("train", [f"constraint={constraint}"], output_dir=tmp_path)
    assert cfg.constraint.use == constraint and set(cfg.constraint.keys()) >= {"use", "directions"}


def test_sweep_and_edit_configs(tmp_path):
    cfg = compose("train", ["hparams_search=asyrp_optuna", "debug=smoke"], output_dir=tmp_path)
    assert cfg.hydra.sweeper.direction == "maximize" and cfg.optimized_metric == "val/clip_direction"
    cfg = compose("edit", ["checkpoint=x.pt", "input_dir=in"], output_dir=tmp_path)
    assert cfg.output_dir == f"{tmp_path}/edited"
    cfg = compose("evaluate", ["runs=[a,b]"], output_dir=tmp_path)
    assert list(cfg.runs) == ["a", "b"] and cfg.clip.model == "ViT-B-16" and cfg.scorer.lpips is None


@pytest.mark.parametrize("option", names("trials"))
def test_trials_configs_compose_or_name_their_extra(option, tmp_path):
    """conf/trials/<option>: k trials at once through a launcher plugin; without the plugin, one line names its
    extra before Hydra composes."""
    from asyrp.ops.cli import LAUNCHER_PLUGINS, check_plugins

    try:
        __import__(LAUNCHER_PLUGINS[option])
    except ImportError:
        assert f"trials={option} needs the package hydra-" in check_plugins([f"trials={option}"])
        return
    cfg = compose("train", ["hparams_search=edit_quality", f"trials={option}"], output_dir=tmp_path)
    assert cfg.hydra.sweeper.n_jobs == cfg.trials.workers and cfg.hydra.sweeper.threads == cfg.trials.threads
    assert cfg.hydra.sweeper._target_ == "hydra_plugins.asyrp_sweeper.StudySweeper"


def labelled_split(experiment: str, tmp_path: Path) -> list[str]:
    """keep=probe and guide=classifier experiments read a labelled split, guide=twins ones a folder of training faces
    and their twins: small ones written here by the data writer."""
    from asyrp.synthfaces.data import write_split, write_twins

    if "twins" in experiment:
        train = write_split(tmp_path / "data" / "train", 1, 4, {})
        twins = write_twins(train, experiment.removeprefix("synthfaces_").partition("_twins")[0])
        return ["dataset.kind=folder", f"dataset.path={train}", f"model.loss.guide.twins.dir={twins}"]
    key = {"keep_probe": "model.loss.keep.probe", "guided": "model.loss.guide.classifier"}
    found = [k for name, k in key.items() if name in experiment]
    if not found:
        return []
    return [f"{found[0]}.labelled={write_split(tmp_path / 'labelled', 4, 24, {})}"]


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_under_smoke(experiment, tmp_path, cache_dir):
    cfg = compose(
        "train",
        [
            f"experiment={experiment}",
            "debug=smoke",
            "~logger",
            f"dataset.cache_dir={cache_dir}",
            "callbacks.edit_grid=null",
            "trainer.limit_val_batches=0",
            *labelled_split(experiment, tmp_path),
        ],
        output_dir=tmp_path,
    )
    assert cfg.arch.name == "tiny_ddpm" and cfg.clip.name == "tiny"
    if cfg.constraint.use != "none":  # the recipe's directions are the synthfaces DDPM's: the tiny net needs its own
        cfg.constraint.directions = [str(p) for p in tiny_directions(tmp_path / "directions")]
    _, objects = train(cfg)
    assert objects["trainer"].global_step > 0
    assert (tmp_path / "checkpoints" / "hfunction.pt").is_file()
