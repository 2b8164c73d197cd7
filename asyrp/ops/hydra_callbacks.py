"""Hydra callbacks (registered in conf/hydra/default.yaml) for what must happen outside the task function.

- ``on_run_start`` / ``on_multirun_start`` (before Hydra writes anything): a run or sweep folder that cannot be
  written (read-only disk, no permission: exit 4; not 64 KB free: exit 3) stops with one line
  (asyrp/ops/faults).
- ``on_run_start`` (before Hydra writes anything into the run folder): a ``train`` run claims its ``hydra.run.dir``
  (asyrp/ops/claims.py: an OS lock held until the run ends) and stops with one error line when another run is in
  progress there, or when the folder holds another training run and ``overwrite=true`` is not given (Hydra would
  otherwise replace that run's ``.hydra/`` files before the task could object). Rerunning the same command in
  the same folder resumes. ``on_run_end`` lets go.
- ``on_job_start`` (right after Hydra saved ``.hydra/config.yaml``, ``hydra.yaml``, ``overrides.yaml``): secret
  values (``*_TOKEN``, ``*_KEY``, ``*SECRET*``, ``password`` in the environment or the config) are redacted from
  those files and from every log record.
- ``on_multirun_start`` / ``on_job_end`` (sweeps): one progress line per finished trial (trial k of N, its value,
  elapsed time and ETA), so a sweep's log or pipe says how far it is.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf


class AsyrpHydraCallback(Callback):
    _sweep: dict | None = None

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        import time

        try:
            sweep_dir = Path(str(OmegaConf.select(config, "hydra.sweep.dir")))
        except Exception:  # noqa: BLE001 - Hydra reports an unresolvable sweep dir itself
            sweep_dir = None
        if sweep_dir is not None:
            _check_writable_or_exit(sweep_dir, "hydra.sweep.dir")
        n = OmegaConf.select(config, "hydra.sweeper.n_trials", default=None)
        self._sweep = {
            "t0": time.monotonic(),
            "done": 0,
            "total": n if isinstance(n, int) else None,
            "pid": os.getpid(),
        }

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if self._sweep is None:
            return
        import time

        from .progress import format_seconds

        s = self._sweep
        try:
            value = job_return.return_value
        except Exception:  # noqa: BLE001 - a failed trial has no value
            value = "failed"
        if s.get("pid") != os.getpid():  # a launcher's worker process (trials=joblib, ...): it counts nothing
            num = OmegaConf.select(config, "hydra.job.env_set.ASYRP_TRIAL", default=config.hydra.job.num)
            print(f"sweep: trial {num} done (value {value})", file=sys.stderr, flush=True)
            return
        s["done"] += 1
        el = time.monotonic() - s["t0"]
        total = s["total"]
        eta = f", ETA {format_seconds(el / s['done'] * (total - s['done']))}" if total else ""
        print(
            f"sweep: trial {s['done']}{f'/{total}' if total else ''} done (value {value}), elapsed "
            f"{format_seconds(el)}{eta}",
            file=sys.stderr,
            flush=True,
        )

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        try:
            run_dir = Path(str(OmegaConf.select(config, "hydra.run.dir")))
        except Exception:  # noqa: BLE001 - an unresolvable run dir is Hydra's error to report
            return
        _check_writable_or_exit(run_dir, "hydra.run.dir")
        if not run_dir.exists():
            from .cli import mark_fresh_run_dir

            mark_fresh_run_dir(run_dir)  # a user error before any output removes it again
        if kwargs.get("config_name") != "train":
            return
        from .claims import hold_run_dir, launching_rank, run_fingerprint
        from .errors import AsyrpUserError, debug_enabled, one_line

        if not launching_rank():  # DDP ranks > 0 rerun the script inside the folder rank 0 holds
            return
        task_cfg = OmegaConf.masked_copy(config, [k for k in config if k != "hydra"])
        try:  # held until the process ends (or on_run_end): the task's own claim finds it held by this thread
            hold_run_dir(run_dir, run_fingerprint(task_cfg), bool(config.get("overwrite", False)))
        except AsyrpUserError as err:
            if debug_enabled():
                raise
            print(f"error: {one_line(err)}", file=sys.stderr, flush=True)
            sys.exit(2)

    def on_run_end(self, config: DictConfig, **kwargs: Any) -> None:
        from .claims import release_all

        release_all()

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


def _check_writable_or_exit(folder: Path, key: str) -> None:
    """A run folder on a read-only disk, without write permission (exit 4) or on a full disk (exit 3): one line,
    before Hydra writes its config files into it (its own error would be a traceback)."""
    from . import faults
    from .errors import debug_enabled, one_line

    try:
        faults.check_writable(folder, key, room=RUN_DIR_ROOM)
    except (faults.PermissionFault, OSError) as err:
        fault = faults.describe(err)
        if fault is None or debug_enabled():
            raise
        print(f"error: {one_line(fault[1])}", file=sys.stderr, flush=True)
        sys.exit(fault[0])


RUN_DIR_ROOM = 64 * 1024  # Hydra's .hydra/*.yaml and the job log's first lines need a few KB
