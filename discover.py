"""Find h-space directions without CLIP: `python discover.py method=pca|jacobian|mean_diff|boundary` (conf/discover.yaml)."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="discover")
def main(cfg: DictConfig) -> None:
    from asyrp.directions.task import discover
    from asyrp.utils.errors import run_cli

    run_cli(discover, cfg)


if __name__ == "__main__":
    from asyrp.utils.cli import precheck

    precheck()  # `method=nme`: one error line instead of Hydra's multi-line report
    main()
