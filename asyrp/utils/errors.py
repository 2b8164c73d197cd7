"""One exception class for problems the user can fix (bad path, corrupt image, impossible config).

The entry points (train.py, edit.py) catch exactly this class, print its one-line message and exit with status 2;
anything else is a bug and keeps its traceback.
"""
from __future__ import annotations

import sys
from typing import Callable, TypeVar

T = TypeVar("T")


class AsyrpUserError(Exception):
    """Bad input: the message names the problem and the fix."""


def run_cli(fn: Callable[..., T], *args, **kwargs) -> T:
    """Run ``fn``; on ``AsyrpUserError`` print one line to stderr and exit 2 (no traceback wall)."""
    try:
        return fn(*args, **kwargs)
    except AsyrpUserError as err:
        print(f"error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)
