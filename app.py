"""The interactive editor: `python app.py [checkpoint=...] [arch=...]` serves a Gradio page (see conf/app.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="app")
def main(cfg: DictConfig) -> None:
    from asyrp.ops.cli import run_cli
    from asyrp.tasks.serve import serve

    world_examples = None
    if cfg.arch.get("name") == "synthfaces":  # the toy world's example faces come from its own package
        from asyrp.synthfaces.render import write_example_faces as world_examples
    run_cli(serve, cfg, world_examples)


if __name__ == "__main__":
    from asyrp.ops.cli import precheck

    precheck()  # `arch=nme`: one error line instead of Hydra's multi-line report
    main()
