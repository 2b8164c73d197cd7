"""Score edit runs into a table: `python evaluate.py runs=[<edit output_dir>,...] metrics=[...]` (conf/evaluate.yaml)."""

import hydra
from omegaconf import DictConfig


@hydra.main(version_base="1.3", config_path="conf", config_name="evaluate")
def main(cfg: DictConfig) -> None:
    from asyrp.ops.cli import run_cli
    from asyrp.tasks.evaluate import evaluate

    oracle = None
    if "oracle" in cfg.metrics or "validity" in cfg.metrics:  # the synthfaces attribute oracle, passed in
        from asyrp.synthfaces.oracle import find_oracle

        oracle = run_cli(find_oracle)
    res = run_cli(evaluate, cfg, oracle)
    print(f"evaluate: {len(res['rows'])} rows -> {res['markdown']}")


if __name__ == "__main__":
    from asyrp.ops.cli import precheck

    precheck()  # `clip=nme`: one error line instead of Hydra's multi-line report
    main()
