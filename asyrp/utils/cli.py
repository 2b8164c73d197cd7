"""Checks on the command line of train.py / edit.py that Hydra would report as a multi-line error.

``check_overrides(argv)``: ``arch=nme`` (a config group option that does not exist) becomes ONE line naming the group,
the value and the options there are. Only plain ``group=name`` overrides are checked (sweeps ``a,b`` too);
anything else (``+group=...`` of a new group, ``choice(...)``, ``key.sub=value``) is left to Hydra.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Sequence

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
                return (f"unknown {key} {v!r}: there is no conf/{key}/{v}.yaml; choose one of {', '.join(options)} "
                        f"(or add conf/{key}/{v}.yaml)")
    return None


def check_plugins(argv: Sequence[str]) -> str | None:
    """The error message when the command line asks for a sweep (``hparams_search=...``) and the Optuna sweeper
    plugin is not installed (Hydra would fail to compose with a multi-line report), else None."""
    from .envfaults import MissingPackage, require

    for arg in argv:
        key, _, value = arg.partition("=")
        if key.lstrip("+") == "hparams_search" and value and value != "null":
            try:
                require("hydra_plugins.hydra_optuna_sweeper", f"hparams_search={value} (the Optuna sweeper plugin)")
                require("optuna", f"hparams_search={value} (the Optuna sweeper plugin)")
            except MissingPackage as err:
                return str(err)
    return None


def precheck(argv: Sequence[str] | None = None) -> None:
    """Exit with one ``error:`` line if the command line names a config that does not exist (2) or needs an
    optional package that is not installed (6, see asyrp/utils/envfaults.py)."""
    from .envfaults import EXIT_PACKAGE

    argv = sys.argv[1:] if argv is None else argv
    msg = check_overrides(argv)
    if msg is not None:
        print(f"error: {msg}", file=sys.stderr, flush=True)
        sys.exit(2)
    msg = check_plugins(argv)
    if msg is not None:
        print(f"error: {msg}", file=sys.stderr, flush=True)
        sys.exit(EXIT_PACKAGE)
