"""Edit images with trained h-functions: `python edit.py checkpoint=... input_dir=... arch=...` (see conf/edit.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="edit")
def main(cfg: DictConfig) -> None:
    from asyrp.ops.cli import run_cli
    from asyrp.tasks.edit import edit

    run_cli(edit, cfg)


if __name__ == "__main__":
    from asyrp.ops.cli import precheck

    precheck()  # `arch=nme`: one error line instead of Hydra's multi-line report
    main()
