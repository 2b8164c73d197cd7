"""Exclusive file locks between processes (``fcntl.flock``), for the folders and caches several runs share.

The kernel drops a flock when its process ends, however it ends (``kill -9`` included), so a lock never outlives
its holder. What may outlive it is the lock file with the holder's record (pid, host, task, settings
fingerprint): a holder that lets go cleanly removes the file, so a record found by the next holder is a claim left
by a process that died, and the takeover is logged. The record also tells a refused contender who holds the lock.

A released lock file is unlinked while it is still locked; a process that was waiting on the old file notices
(its inode is no longer the file at the path) and locks the new one, so two holders can never coexist.

Why this lives below the core (a leaf of asyrp.ops, importable from anywhere): the inversion cache takes turns on
its folder's lock whoever builds it (a training run, a sweep trial, an experiment script, a test), and a lock is a
property of the shared folder, not of the process that runs the task; it holds no process-wide state. The claims on
run folders (asyrp/ops/claims.py) use the same primitive from the task layer.

Limits: flock is advisory (only asyrp's code takes it); on NFS, Linux emulates it with POSIX byte-range locks,
which needs a working lock manager; it does not exist on Windows (there the locks are skipped with a warning).
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None

log = logging.getLogger(__name__)


class LockBusy(Exception):
    """The lock is held by another process; ``holder`` is its record ({} if it has not written one yet)."""

    def __init__(self, path: Path, holder: Mapping[str, Any]):
        super().__init__(f"{path} is held by {dict(holder) or 'another process'}")
        self.path, self.holder = path, dict(holder)


def _read_record(fd: int, patience: float = 0.0) -> dict[str, Any]:
    """The holder's record; a holder writes it right after locking, so a contender waits up to ``patience`` s."""
    deadline = time.monotonic() + patience
    while True:
        try:
            data = os.pread(fd, 65536, 0)
            rec = json.loads(data) if data.strip() else None
        except (OSError, ValueError):
            rec = None
        if isinstance(rec, dict) or time.monotonic() >= deadline:
            return rec if isinstance(rec, dict) else {}
        time.sleep(0.02)


def _is_current(fd: int, path: Path) -> bool:
    try:
        return os.stat(path).st_ino == os.fstat(fd).st_ino
    except FileNotFoundError:
        return False


class FileLock:
    """A held lock; ``release`` (idempotent) removes the lock file, then lets go."""

    def __init__(self, path: Path, fd: int | None, record: Mapping[str, Any]):
        self.path, self.fd, self.record = path, fd, dict(record)

    def release(self) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            if _is_current(fd, self.path):
                self.path.unlink()
        except OSError:
            pass
        finally:
            os.close(fd)  # closing the last descriptor releases the flock

    def __enter__(self) -> FileLock:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def _record(extra: Mapping[str, Any]) -> dict[str, Any]:
    now = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    return {"pid": os.getpid(), "host": socket.gethostname(), "since": now, **extra}


def describe(holder: Mapping[str, Any]) -> str:
    """'pid 123 on host, since <time>' (or a plain phrase when the holder wrote no record yet)."""
    if not holder.get("pid"):
        return "its holder has not said who it is yet"
    return f"pid {holder['pid']} on {holder.get('host', '?')}, since {holder.get('since', '?')}"


def acquire(
    path: str | os.PathLike,
    record: Mapping[str, Any] | None = None,
    *,
    wait: bool = False,
    on_wait: Callable[[dict[str, Any]], None] | None = None,
) -> FileLock:
    """Lock ``path`` (created with its folder if needed) for this process. Held elsewhere: ``LockBusy`` at once,
    or with ``wait`` block until it is free (``on_wait`` is told the holder's record once)."""
    path = Path(path)
    rec = _record(record or {})
    if fcntl is None:  # pragma: no cover
        log.warning("no fcntl on this platform: %s is not locked against other processes", path)
        return FileLock(path, None, rec)
    told = False
    while True:
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o666)
        except PermissionError:  # a shared folder we may read but not write: lock, without a record
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_record(fd, patience=1.0)
                if not wait:
                    raise LockBusy(path, holder) from None
                if on_wait is not None and not told:
                    on_wait(holder)
                    told = True
                fcntl.flock(fd, fcntl.LOCK_EX)
            if _is_current(fd, path):
                break
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)  # the holder removed this file as it let go: lock the one at the path now
    stale = _read_record(fd)
    if stale.get("pid"):
        log.warning(
            "%s: taking over a claim left by a process that ended without releasing it (%s, %s)",
            path.parent,
            describe(stale),
            stale.get("task", "?"),
        )
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(rec).encode(), 0)
    except OSError:  # read-only lock file: the lock holds all the same
        pass
    return FileLock(path, fd, rec)
