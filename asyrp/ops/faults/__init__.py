"""Faults of the environment (full disk, no permission, out of memory, Ctrl-C / SIGTERM, a missing optional package)
turned into the project's one ``error:`` line, with an exit code by kind and a word on how to resume.

Every entry point runs its task through ``asyrp.ops.cli.run_cli``, which runs it inside ``installed()`` (stop
handlers, log-file guard) and calls ``describe()`` on whatever escapes. The table (docs/reliability.md, "Faults of
the environment"):

==========  ====  =================================================================================================
kind        exit  raised as
==========  ====  =================================================================================================
input          2  ``AsyrpUserError`` (bad config, path, image; asyrp/ops/errors.py)
no_space       3  ``OSError`` ENOSPC / EDQUOT (disk full, quota exceeded) at a write
permission     4  ``OSError`` EACCES / EPERM / EROFS (permission denied, read-only file system)
memory         5  ``MemoryError``, ``torch.OutOfMemoryError`` (CUDA), torch's "DefaultCPUAllocator: can't allocate"
package        6  ``ModuleNotFoundError`` of an optional package, ``LPIPSWeightsMissing``, ``MissingPackage``
interrupted  130  Ctrl-C (SIGINT); 143 for SIGTERM (a node preempted, ``kill``)
worker      its  ``WorkerFailed``: a worker process (a rank of ``edit.py devices=N``) died or failed: the rank's fault's
                  code, or 128 + the signal that killed it (137 for SIGKILL)
bug            1  anything else: Python's traceback
==========  ====  =================================================================================================

``ASYRP_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) keeps the traceback of every one of these.

By concern: ``kinds`` (exit codes), ``stop`` (signals, ``check_stop``, the log-file guard), ``context`` (what the
task is doing: ``register_folder``, ``doing``, ``set_resume``, ``check_writable``), ``packages`` (``require``,
``MissingPackage``), ``describe`` (the messages). The atomic writers (asyrp/ops/io.py) attach the path and size they
were writing to the ``OSError`` (``asyrp.ops.errors.annotate``). Only the entry points and the task layer import
this package; core loops get its ``check_stop`` / ``doing`` as a guard (``GUARD``, asyrp/ops/guard.py).
"""

from .context import (
    PermissionFault,
    check_writable,
    doing,
    register_folder,
    reset,
    set_resume,
)
from .describe import describe
from .kinds import (
    EXIT_BUG,
    EXIT_MEMORY,
    EXIT_NO_SPACE,
    EXIT_PACKAGE,
    EXIT_PERMISSION,
    EXIT_SIGINT,
    EXIT_SIGTERM,
    EXIT_USER_ERROR,
    NO_PERMISSION,
    NO_SPACE,
    WorkerFailed,
)
from .packages import (
    OPTIONAL_PACKAGES,
    MissingPackage,
    require,
    require_logger_packages,
)
from .stop import (
    Interrupted,
    check_stop,
    install,
    install_stop_handlers,
    installed,
    stop_at_once,
    stop_count,
    stop_requested,
)

__all__ = [
    "EXIT_BUG",
    "EXIT_MEMORY",
    "EXIT_NO_SPACE",
    "EXIT_PACKAGE",
    "EXIT_PERMISSION",
    "EXIT_SIGINT",
    "EXIT_SIGTERM",
    "EXIT_USER_ERROR",
    "GUARD",
    "NO_PERMISSION",
    "NO_SPACE",
    "OPTIONAL_PACKAGES",
    "Interrupted",
    "MissingPackage",
    "PermissionFault",
    "WorkerFailed",
    "check_stop",
    "check_writable",
    "describe",
    "doing",
    "install",
    "install_stop_handlers",
    "installed",
    "register_folder",
    "require",
    "require_logger_packages",
    "reset",
    "set_resume",
    "stop_at_once",
    "stop_count",
    "stop_requested",
]


class _ProcessGuard:
    """The guard (asyrp/ops/guard.py) of a task run under ``run_cli``: this process's stop requests and messages."""

    def stop(self, done: str) -> None:
        check_stop(done)

    def stop_asked(self) -> bool:
        return stop_requested() is not None

    def doing(self, what: str, batch_key: str | None = None, batch: int | None = None):
        return doing(what, batch_key, batch)

    def take_signals(self) -> None:
        install_stop_handlers()


GUARD = _ProcessGuard()
