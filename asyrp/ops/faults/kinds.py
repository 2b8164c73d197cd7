"""The kinds of fault and their exit codes (the table in ``asyrp.ops.faults``), and the errno values behind them."""

from __future__ import annotations

import errno
import signal

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_NO_SPACE = 3
EXIT_PERMISSION = 4
EXIT_MEMORY = 5
EXIT_PACKAGE = 6
EXIT_SIGINT = 128 + signal.SIGINT  # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}


class WorkerFailed(Exception):
    """A process the task started for part of its work (a rank of ``edit.py devices=N``) died or failed: the message
    says which, what happened and what is left; the exit code is the worker's (its fault's, or 128 + the signal that
    killed it)."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = int(exit_code)
