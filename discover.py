"""Find h-space directions without CLIP: `python discover.py method=pca|jacobian|mean_diff|boundary` (conf/discover.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="discover")
def main(cfg: DictConfig) -> None:
    from asyrp.ops.cli import run_cli
    from asyrp.tasks.discover import discover

    run_cli(discover, cfg, oracle=_oracle(cfg))


def _oracle(cfg: DictConfig):
    """The synthfaces attribute oracle, when the backbone is the synthfaces DDPM, judging is on and it is built."""
    if cfg.judge == "none" or cfg.arch.get("name") != "synthfaces":
        return None
    from asyrp.synthfaces.oracle import find_oracle

    return find_oracle()


if __name__ == "__main__":
    from asyrp.ops.cli import precheck

    precheck()  # `method=nme`: one error line instead of Hydra's multi-line report
    main()
