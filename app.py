"""The interactive editor: `python app.py [checkpoint=...] [arch=...]` serves a Gradio page (see conf/app.yaml)."""
import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg: DictConfig) -> None:
    from asyrp.app import serve
    from asyrp.utils.errors import run_cli

    run_cli(serve, cfg)


if __name__ == "__main__":
    from asyrp.utils.cli import precheck

    precheck()  # `arch=nme`: one error line instead of Hydra's multi-line report
    main()
