"""One exception class for problems the user can fix (bad path, corrupt image, impossible config).

The entry points (train.py, edit.py, and any other) run their task through ``run_cli``, which catches exactly this
class (and OmegaConf's "missing value" / "bad interpolation" errors, which are user errors too), prints ONE line
``error: <problem and fix>`` to stderr and exits with status 2. Faults of the environment (full disk, permission,
out of memory, Ctrl-C / SIGTERM, a missing optional package) get one line too, with their own exit codes
(asyrp/utils/envfaults.py). Anything else is a bug and keeps its traceback. ``ASYRP_DEBUG=1`` (or Hydra's
``HYDRA_FULL_ERROR=1``) re-raises all of these, with the full traceback.
"""
from __future__ import annotations

import os
import re
import sys
from typing import Callable, TypeVar

T = TypeVar("T")

EXIT_USER_ERROR = 2


class AsyrpUserError(Exception):
    """Bad input: the message names the problem and the fix."""


class TrainingDiverged(AsyrpUserError):
    """The loss or the h-function's weights became NaN/inf; the run stopped and kept its last good checkpoint."""


def debug_enabled() -> bool:
    return any(os.environ.get(k, "").strip().lower() in ("1", "true", "yes") for k in ("ASYRP_DEBUG", "HYDRA_FULL_ERROR"))


def one_line(msg: object) -> str:
    """The message on a single line (runs of whitespace with newlines become one space)."""
    return re.sub(r"\s*\n\s*", " ", str(msg)).strip()


def user_error_from(err: BaseException) -> AsyrpUserError | None:
    """An AsyrpUserError for the OmegaConf errors a user causes (a ??? left unset, an interpolation that does not
    resolve), naming the key; None for anything else."""
    try:
        from omegaconf.errors import InterpolationResolutionError, MissingMandatoryValue
    except ImportError:  # pragma: no cover
        return None
    key = getattr(err, "full_key", None) or ""
    if isinstance(err, MissingMandatoryValue):
        return AsyrpUserError(f"{key or 'a config value'} is required but not set (???): pass {key or '<key>'}=<value>")
    if isinstance(err, InterpolationResolutionError):
        msg = one_line(getattr(err, "msg", err))
        return AsyrpUserError(f"config value {key!r} does not resolve ({msg}): fix or override {key or 'it'}")
    return None


def run_cli(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` as an entry point's task. A user error prints one line to stderr and exits 2; a fault of the
    environment (disk full, permission, out of memory, Ctrl-C / SIGTERM, a missing optional package) prints one
    line and exits with its code (asyrp/utils/envfaults.py); anything else is a bug and keeps its traceback.
    Installs the stop handlers first: Ctrl-C / SIGTERM stop at the next safe point, a second one at once."""
    from . import envfaults

    try:
        with envfaults.installed():
            return fn(*args, **kwargs)
    except AsyrpUserError as err:
        if debug_enabled():
            raise
        _fail(err)
    except BaseException as err:  # noqa: BLE001 - env faults and OmegaConf's user errors become one line
        fault = envfaults.describe(err)
        if fault is not None and not debug_enabled():
            _fail(fault[1], fault[0], remove_run_dir=fault[0] in (envfaults.EXIT_PACKAGE, envfaults.EXIT_PERMISSION))
        user = user_error_from(err) if isinstance(err, Exception) else None
        if user is None or debug_enabled():
            raise
        _fail(user)
    raise AssertionError("unreachable")  # pragma: no cover


_FRESH_RUN_DIR: list = []  # the Hydra run folder when this process created it (set by the Hydra callback)


def mark_fresh_run_dir(path) -> None:
    _FRESH_RUN_DIR[:] = [path]


def _remove_fresh_run_dir() -> None:
    """A run stopped by a user error leaves nothing behind: drop the folder Hydra made for it, if it holds only
    Hydra's own files (.hydra/, the job log). A folder that existed before, or got real outputs, is kept."""
    import shutil
    from pathlib import Path

    if not _FRESH_RUN_DIR:
        return
    run_dir = Path(str(_FRESH_RUN_DIR[0]))
    try:
        own = (".hydra", ".asyrp.lock")  # Hydra's saved config; the run's claim on the folder (asyrp/runs.py)
        if run_dir.is_dir() and all(p.name in own or p.suffix == ".log" for p in run_dir.iterdir()):
            shutil.rmtree(run_dir)
    except OSError:
        pass


def _fail(err: BaseException | str, code: int = EXIT_USER_ERROR, remove_run_dir: bool = True) -> None:
    """Print ``error: <one line>`` and exit with ``code``. The fresh run folder goes only when nothing ran yet
    (user errors, missing packages, unwritable folders); after a disk-full, OOM or interruption it holds the
    finished work that a rerun resumes from."""
    from .secrets import redact_text

    print(f"error: {redact_text(one_line(err))}", file=sys.stderr, flush=True)
    if remove_run_dir:
        _remove_fresh_run_dir()
    sys.exit(code)
