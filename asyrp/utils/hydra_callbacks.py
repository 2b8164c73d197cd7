"""Hydra callbacks (registered in conf/hydra/default.yaml) for what must happen outside the task function.

- ``on_run_start`` (before Hydra writes anything into the run folder): a ``train`` run whose ``hydra.run.dir`` holds
  another training run stops with one error line unless ``overwrite=true`` (Hydra would otherwise replace that
  run's ``.hydra/`` files before the task could object). Rerunning the same command in the same folder resumes.
- ``on_job_start`` (right after Hydra saved ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``): secret
  values (``*_TOKEN``, ``*_KEY``, ``*SECRET*``, ``password`` in the environment or the config) are redacted from
  those files and from every log record.
"""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class AsyrpHydraCallback(Callback):
    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        except Exception:  # noqa: BLE001 - an unresolvable run dir is Hydra's error to report
            return
        if not run_dir.exists():
            from .errors import mark_fresh_run_dir

            mark_fresh_run_dir(run_dir)  # a user error before any output removes it again
            return
        if kwargs.get("config_name") != "train":
            return
        from ..runs import check_run_dir, run_fingerprint
        from .errors import AsyrpUserError, debug_enabled, one_line

        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:
            check_run_dir(run_dir, run_fingerprint(task_cfg), bool(config.get("overwrite", False)))
        except AsyrpUserError as err:
            if debug_enabled():
                raise
            print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
            sys.exit(2)

    def on_job_start(self, config: DictConfig, **kwargs: Any) -> None:
        from . import secrets

        secrets.register(secrets.collect_config_secrets(config))
        secrets.install_log_filter()
        try:
            out = Path(str(config.hydra.runtime.output_dir))
            sub = config.hydra.output_subdir
        except Exception:  # noqa: BLE001
            return
        if sub is None:
            return
        secrets.scrub_files([out / sub / n for n in ("config.yaml", "hydra.yaml", "overrides.yaml")])
