"""Train an Asyrp h-function: `python train.py experiment=celeba_smiling` (see conf/train.yaml)."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
def main(cfg: DictConfig) -> float | None:
    from asyrp.tasks import get_metric_value, train
    from asyrp.utils.errors import run_cli

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    metric_dict, _ = run_cli(train, cfg)
    # a sweep (hparams_search=...) optimises this value; a single run does not need it
    sweep = HydraConfig.get().mode == RunMode.MULTIRUN
    return run_cli(get_metric_value, metric_dict, cfg.get("optimized_metric"), sweep)


if __name__ == "__main__":
    from asyrp.utils.cli import precheck

    precheck()  # `arch=nme`: one error line instead of Hydra's multi-line report
    main()
