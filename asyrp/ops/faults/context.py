"""What the process is doing, for the messages: which config key moves a folder (``register_folder``, also done by
``check_writable`` before any work), the work under way and the batch to lower on out-of-memory (``doing``), and how
the run resumes (``set_resume``)."""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ..errors import annotate
from .kinds import NO_PERMISSION
from .stop import reset_stop


@dataclass
class _Context:
    folders: dict  # resolved folder path -> config key that moves it
    doing: list  # stack of (what, batch_key, batch)
    resume: str | None = None


_CTX = _Context(folders={}, doing=[])


def register_folder(path: str | os.PathLike, key: str) -> None:
    """Say which config key moves ``path`` (named in a disk-full / permission message about a file under it)."""
    _CTX.folders[str(Path(path).expanduser().absolute())] = key


def set_resume(text: str | None) -> None:
    """How to resume this run, said after an interruption or a fault (e.g. 'rerun with output_dir=<out>')."""
    _CTX.resume = text


@contextlib.contextmanager
def doing(what: str, batch_key: str | None = None, batch: int | None = None) -> Iterator[None]:
    """Name the work under way (and the batch size to lower if it runs out of memory)."""
    _CTX.doing.append((what, batch_key, batch))
    try:
        yield
    except BaseException as err:
        if getattr(err, "asyrp_doing", None) is None:  # the message is written after this context has closed
            with contextlib.suppress(AttributeError, TypeError):
                err.asyrp_doing = list(_CTX.doing)
        raise
    finally:
        _CTX.doing.pop()


def reset() -> None:
    """Forget folders, resume hint and stop requests (tests; a new task in the same process)."""
    _CTX.folders.clear()
    _CTX.doing.clear()
    _CTX.resume = None
    reset_stop()


def key_for(path: Path | None) -> str | None:
    """The config key registered for the folder holding ``path`` (the nearest one), or None."""
    if path is None:
        return None
    p = str(Path(path).expanduser().absolute())
    best = max((f for f in _CTX.folders if p == f or p.startswith(f.rstrip(os.sep) + os.sep)), key=len, default=None)
    return _CTX.folders.get(best) if best else None


def resume_hint(default: str = "rerun the same command: it resumes") -> str:
    return _CTX.resume or default


def doing_stack(err: BaseException) -> list:
    """The work under way when ``err`` was raised (or now)."""
    return getattr(err, "asyrp_doing", None) or list(_CTX.doing)


# -- permission: before any work ---------------------------------------------------------------------------------
class PermissionFault(Exception):
    """A folder the run must write to is not writable (found before any work; exit 4)."""


def check_writable(path: str | os.PathLike, key: str, room: int = 0) -> None:
    """Raise ``PermissionFault`` if files cannot be created in ``path``, or the ``OSError`` of a full disk if
    ``room`` bytes do not fit there (Hydra's own config files, written before any task code could explain).

    The folder need not exist: its nearest existing parent is probed, and nothing is created or left behind."""
    folder = Path(path).expanduser().absolute()
    register_folder(folder, key)
    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return  # a file in the way: the mkdir later names it
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=".asyrp_write_probe.", dir=probe)
        try:
            left = memoryview(b"\0" * room)
            while left:  # a nearly full disk takes part of a write, then refuses the rest (ENOSPC)
                left = left[os.write(fd, left) :]
            if room:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno not in NO_PERMISSION:
            raise annotate(err, folder, room or None)  # noqa: B904 (the same error, re-raised with its path)
        what = "is on a read-only file system" if err.errno == errno.EROFS else "is not writable (permission denied)"
        where = f"{folder}" if probe == folder else f"{folder} (its parent {probe})"
        raise PermissionFault(
            f"{where} {what}: nothing was written. Choose another {key}=<folder> or make it "
            "writable, then rerun the same command"
        ) from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
