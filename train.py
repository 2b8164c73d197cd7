"""Train an Asyrp h-function: `python train.py experiment=celeba_smiling` (see conf/train.yaml)."""

import time

import hydra
from omegaconf import DictConfig, OmegaConf


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    from asyrp.ops.cli import run_cli
    from asyrp.tasks.train import get_metric_value, train

    t_start = time.time()
    metric_dict, objects = run_cli(train, cfg)
    if cfg.get("edit_quality") and cfg.get("train", True):  # hparams_search=edit_quality: judge the trial by its edits
        from asyrp.synthfaces.oracle import find_oracle
        from asyrp.tasks.edit_quality import edit_quality

        oracle = find_oracle() if cfg.attribute.get("oracle_target") else None  # the synthfaces attribute oracle
        metric_dict.update(
            run_cli(edit_quality, cfg, {**objects, "train_seconds": round(time.time() - t_start, 1)}, oracle)
        )
    # a sweep (hparams_search=...) optimises this value; a single run does not need it
    sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    name = cfg.get("optimized_metric")
    if OmegaConf.is_list(name):  # a multi-objective sweep (hydra.sweeper.direction=[...]): one value per metric
        return [run_cli(get_metric_value, metric_dict, str(n), sweep) for n in name]
    return run_cli(get_metric_value, metric_dict, name, sweep)


if __name__ == "__main__":
    from asyrp.ops.cli import precheck

    precheck()  # `arch=nme`: one error line instead of Hydra's multi-line report
    main()
