"""One exception class for problems the user can fix (bad path, corrupt image, impossible config).

The entry points (train.py, edit.py, and any other) run their task through ``run_cli`` (asyrp/ops/cli.py), which catches exactly this
class (and OmegaConf's "missing value" / "bad interpolation" errors, which are user errors too), prints ONE line
``error: <problem and fix>`` to stderr and exits with status 2. Faults of the environment (full disk, permission,
out of memory, Ctrl-C / SIGTERM, a missing optional package) get one line too, with their own exit codes
(asyrp/ops/faults). Anything else is a bug and keeps its traceback. ``ASYRP_DEBUG=1`` (or Hydra's
``HYDRA_FULL_ERROR=1``) re-raises all of these, with the full traceback.
"""

from __future__ import annotations

import os
import re


class AsyrpUserError(Exception):
    """Bad input: the message names the problem and the fix."""


class TrainingDiverged(AsyrpUserError):
    """The loss or the h-function's weights became NaN/inf; the run stopped and kept its last good checkpoint."""


def debug_enabled() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes") for k in ("ASYRP_DEBUG", "HYDRA_FULL_ERROR")
    )


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


def annotate(err: OSError, path: str | os.PathLike, size: int | None = None) -> OSError:
    """Attach the file being written (its final name, not the temporary one) and its size to ``err``, for the
    one-line message of a full disk (asyrp/ops/faults/describe.py)."""
    if getattr(err, "asyrp_path", None) is None:
        from pathlib import Path

        err.asyrp_path = Path(path)
        err.asyrp_size = size
    return err
