"""What an entry point (train.py, edit.py, discover.py, app.py, python -m asyrp.synthfaces.data) needs around its
task: ``precheck()`` of the command line before Hydra composes, and ``run_cli(task, ...)``, which turns whatever
escapes the task into one ``error:`` line and an exit code by kind (asyrp/ops/faults).

Checks on the command line that Hydra would report as a multi-line error:

``check_overrides(argv)``: ``arch=nme`` (a config group option that does not exist) becomes ONE line naming the group,
the value and the options there are. Only plain ``group=name`` overrides are checked (sweeps ``a,b`` too);
anything else (``+group=...`` of a new group, ``choice(...)``, ``key.sub=value``) is left to Hydra.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from .errors import AsyrpUserError, debug_enabled, one_line, user_error_from
from .faults.kinds import EXIT_USER_ERROR

T = TypeVar("T")

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"
_NAME = re.compile(r"^[\w.\-]+$")


def check_overrides(argv: Sequence[str], conf_dir: Path = CONF_DIR) -> str | None:
    """The error message for the first override naming a missing config group option, else None."""
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir() and p.name != "hydra"} if conf_dir.is_dir() else set()
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, value = arg.split("=", 1)
        key = key.lstrip("+")
        if key.startswith("~") or key not in groups or "@" in key:
            continue
        for v in value.split(","):
            v = v.strip()
            if not _NAME.match(v) or v == "null":
                continue
            if not (conf_dir / key / f"{v}.yaml").is_file():
                options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
                return (
                    f"unknown {key} {v!r}: there is no conf/{key}/{v}.yaml; choose one of {', '.join(options)} "
                    f"(or add conf/{key}/{v}.yaml)"
                )
    return None


#: a launcher the command line may ask for (trials=<option>, hydra/launcher=<name>) -> the plugin module behind it
LAUNCHER_PLUGINS = {
    "joblib": "hydra_plugins.hydra_joblib_launcher",
    "submitit_local": "hydra_plugins.hydra_submitit_launcher",
    "submitit_slurm": "hydra_plugins.hydra_submitit_launcher",
    "slurm": "hydra_plugins.hydra_submitit_launcher",
    "ray": "hydra_plugins.hydra_ray_launcher",
    "ray_aws": "hydra_plugins.hydra_ray_launcher",
}


def check_plugins(argv: Sequence[str]) -> str | None:
    """The error message when the command line asks for a sweep (``hparams_search=...``) without Optuna >= 4, or
    for a launcher (``trials=...``, ``hydra/launcher=...``) whose plugin is not installed (Hydra would fail to
    compose with a multi-line report), else None."""
    from .faults import MissingPackage, require

    for arg in argv:
        key, _, value = arg.partition("=")
        key = key.lstrip("+")
        try:
            if key == "hparams_search" and value and value != "null":
                require("optuna", f"hparams_search={value} (the Optuna sweeper)", min_version="4")
            if key in ("trials", "hydra/launcher") and value in LAUNCHER_PLUGINS:
                require(LAUNCHER_PLUGINS[value], f"{key}={value}")
        except MissingPackage as err:
            return str(err)
    return None


def precheck(argv: Sequence[str] | None = None) -> None:
    """Exit with one ``error:`` line if the command line names a config that does not exist (2) or needs an
    optional package that is not installed (6, see asyrp/ops/faults)."""
    from .faults import EXIT_PACKAGE

    argv = sys.argv[1:] if argv is None else argv
    msg = check_overrides(argv)
    if msg is not None:
        print(f"error: {msg}", file=sys.stderr, flush=True)
        sys.exit(EXIT_USER_ERROR)
    msg = check_plugins(argv)
    if msg is not None:
        print(f"error: {msg}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PACKAGE)


def run_cli(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn`` as an entry point's task. A user error prints one line to stderr and exits 2; a fault of the
    environment (disk full, permission, out of memory, Ctrl-C / SIGTERM, a missing optional package) prints one
    line and exits with its code (asyrp/ops/faults); anything else is a bug and keeps its traceback.
    Installs the stop handlers first: Ctrl-C / SIGTERM stop at the next safe point, a second one at once."""
    from . import faults

    try:
        with faults.installed():
            return fn(*args, **kwargs)
    except AsyrpUserError as err:
        if debug_enabled():
            raise
        _fail(err)
    except BaseException as err:  # noqa: BLE001 - env faults and OmegaConf's user errors become one line
        fault = faults.describe(err)
        if fault is not None and not debug_enabled():
            _fail(fault[1], fault[0], remove_run_dir=fault[0] in (faults.EXIT_PACKAGE, faults.EXIT_PERMISSION))
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
        own = (".hydra", ".asyrp.lock")  # Hydra's saved config; the run's claim on the folder (asyrp/ops/claims.py)
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
