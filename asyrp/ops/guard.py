"""The guard a task hands the long loops of the core (the inversion cache's build, the edit loop, training's
``StopOnSignal``): where the loop may stop, and what it is doing.

Why a parameter and not an import: what a stop or a fault means is the process's business (signal handlers, the
one ``error:`` line, how to resume: ``asyrp.ops.faults``), and a loop run from a notebook, a test or an experiment
script has none of it. So the loop calls the guard it was given at its safe points, and the task that runs it under
``run_cli`` passes ``asyrp.ops.faults.GUARD``; everyone else gets ``UNGUARDED``, which never stops and names nothing.
"""

from __future__ import annotations

import contextlib
from contextlib import AbstractContextManager as ContextManager
from typing import Protocol


class Guard(Protocol):
    def stop(self, done: str) -> None:
        """At a safe point (everything finished so far is on disk): raise if a stop was asked for; ``done`` says what
        is finished and where."""

    def stop_asked(self) -> bool:
        """Whether a stop was asked for (a loop that must save its state first, then ``stop``)."""

    def doing(self, what: str, batch_key: str | None = None, batch: int | None = None) -> ContextManager[None]:
        """Name the work under way (and the config key of the batch size to lower if it runs out of memory)."""

    def take_signals(self) -> None:
        """Make Ctrl-C / SIGTERM ask for a stop again, after a library installed its own handlers."""


class _Unguarded:
    def stop(self, done: str) -> None:
        pass

    def stop_asked(self) -> bool:
        return False

    def doing(self, what: str, batch_key: str | None = None, batch: int | None = None) -> ContextManager[None]:
        return contextlib.nullcontext()

    def take_signals(self) -> None:
        pass


UNGUARDED: Guard = _Unguarded()
