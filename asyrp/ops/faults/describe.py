"""A fault of the environment turned into (exit code, the one ``error:`` line): the mapping ``run_cli`` applies to
whatever escapes a task (asyrp/ops/cli.py). The messages name the folder's config key, the batch to lower and how to
resume, from what the task said it was doing (asyrp/ops/faults/context.py)."""

from __future__ import annotations

import errno
import shutil
import signal
from pathlib import Path

from .context import PermissionFault, doing_stack, key_for, resume_hint
from .kinds import (
    EXIT_MEMORY,
    EXIT_NO_SPACE,
    EXIT_PACKAGE,
    EXIT_PERMISSION,
    EXIT_SIGINT,
    NO_PERMISSION,
    NO_SPACE,
    WorkerFailed,
)
from .packages import OPTIONAL_PACKAGES, MissingPackage
from .stop import Interrupted, stop_requested


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def _free_bytes(path: Path | None) -> int | None:
    p = path
    while p is not None and not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free if p is not None else None
    except OSError:
        return None


def _oserror_message(err: OSError) -> tuple[int, str] | None:
    if err.errno not in NO_SPACE | NO_PERMISSION:
        return None
    path = getattr(err, "asyrp_path", None) or (Path(err.filename) if err.filename else None)
    size = getattr(err, "asyrp_size", None)
    key = key_for(path)
    move = f"choose another {key}=<folder>" if key else "write elsewhere"
    where = f" {path}" if path else " a file"
    if err.errno in NO_SPACE:
        cause = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space left on device"
        free = _free_bytes(path) if path else None
        bits = ([_size(size)] if size is not None else []) + ([f"{_size(free)} free there"] if free is not None else [])
        sized = f" ({'; '.join(bits)})" if bits else ""
        # asyrp's writers (annotated) go through a temporary file; a library's own log file may be cut short
        kept = (
            "nothing was half-written and finished files are kept"
            if getattr(err, "asyrp_path", None) is not None
            else "finished files are kept"
        )
        msg = f"{cause} while writing{where}{sized}: {kept}. Free some space (or {move}), then {resume_hint()}"
        return EXIT_NO_SPACE, msg
    cause = "read-only file system" if err.errno == errno.EROFS else "permission denied"
    msg = f"{cause} writing{where}: make the folder writable or {move}, then {resume_hint()}"
    return EXIT_PERMISSION, msg


def _is_oom(err: BaseException) -> str | None:
    try:
        import torch

        if isinstance(err, torch.OutOfMemoryError):
            return "GPU" if "CUDA" in str(err) or "HIP" in str(err) or "MPS" in str(err) else "device"
    except (ImportError, AttributeError):  # pragma: no cover
        pass
    if isinstance(err, MemoryError):
        return "CPU"
    if isinstance(err, RuntimeError) and "DefaultCPUAllocator" in str(err):
        return "CPU"
    return None


def _oom_message(kind: str, stack: list) -> str:
    ctx = [d for d in stack if d[1]]
    what = next((d[0] for d in reversed(stack)), None)
    lower = (
        f"lower {ctx[-1][1]} (now {ctx[-1][2]})"
        if ctx and ctx[-1][2] is not None
        else f"lower {ctx[-1][1]}"
        if ctx
        else "lower the batch size"
    )
    during = f" while {what}" if what else ""
    return f"out of {kind} memory{during}: {lower} or free memory, then {resume_hint()}"


def _interrupted_message(err: Interrupted) -> str:
    name = "interrupted (Ctrl-C)" if err.signum == signal.SIGINT else f"terminated ({signal.Signals(err.signum).name})"
    what = next((d[0] for d in reversed(doing_stack(err))), None)
    how = "stopped at once (second signal)" if err.at_once else "stopped at a safe point"
    parts = [f"{name} {'while ' + what + ': ' if what else ''}{how}"]
    if err.done:
        parts.append(err.done)
    elif err.at_once:
        parts.append("every file written so far is complete")
    return "; ".join(parts) + f". To resume, {resume_hint('rerun the same command')}"


def _with_doing(new: Interrupted, old: BaseException) -> Interrupted:
    new.asyrp_doing = doing_stack(old)
    return new


def describe(err: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for a fault of the environment; None for anything else (a bug)."""
    if isinstance(err, Interrupted):
        return err.exit_code, _interrupted_message(err)
    if isinstance(err, KeyboardInterrupt):  # before our handlers were installed, or a library re-raised it
        return EXIT_SIGINT, _interrupted_message(_with_doing(Interrupted(signal.SIGINT, at_once=True), err))
    if isinstance(err, SystemExit) and stop_requested() is not None:  # e.g. Lightning's SIGTERMException
        return 128 + stop_requested(), _interrupted_message(_with_doing(Interrupted(stop_requested()), err))
    if isinstance(err, WorkerFailed):
        return err.exit_code, str(err)
    if isinstance(err, PermissionFault):
        return EXIT_PERMISSION, str(err)
    if isinstance(err, MissingPackage):
        return EXIT_PACKAGE, str(err)
    if type(err).__name__ == "LPIPSWeightsMissing":
        return EXIT_PACKAGE, str(err)
    if isinstance(err, ModuleNotFoundError) and err.name:
        top = err.name
        known = next((m for m in OPTIONAL_PACKAGES if top == m or top.startswith(m + ".")), None)
        if known:
            return EXIT_PACKAGE, str(MissingPackage(known))
        return None
    if isinstance(err, OSError):
        return _oserror_message(err)
    oom = _is_oom(err)
    if oom:
        return EXIT_MEMORY, _oom_message(oom, doing_stack(err))
    return None
