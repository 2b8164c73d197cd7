"""Interruption: the first SIGINT / SIGTERM only asks to stop; a loop's safe point (``check_stop(done)``, handed to
the loop by its task as the guard's ``stop``) then raises ``Interrupted``. A second signal raises it at once,
wherever the process is. ``installed()`` (what ``run_cli`` runs a task in) also guards the log files against a full
disk."""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
from collections.abc import Iterator

from .kinds import NO_PERMISSION, NO_SPACE


class Interrupted(BaseException):
    """Ctrl-C / SIGTERM: raised at a safe point (or at once on the second signal). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int, done: str = "", at_once: bool = False):
        self.signum, self.done, self.at_once = int(signum), done, at_once
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


_STOP: dict = {"signum": None, "count": 0}


def _on_signal(signum, frame) -> None:
    _STOP["count"] += 1
    if _STOP["signum"] is None:
        _STOP["signum"] = signum
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    if _STOP["count"] == 1:
        print(
            f"\n{name}: stopping at the next safe point (finished work is kept); press Ctrl-C again to stop at once",
            file=sys.stderr,
            flush=True,
        )
        return
    raise Interrupted(_STOP["signum"], at_once=True)


def install_stop_handlers() -> None:
    """First SIGINT / SIGTERM: ask to stop at the next safe point; the second: stop at once (main thread only)."""
    for s in (signal.SIGINT, signal.SIGTERM):
        try:
            if signal.getsignal(s) is not _on_signal:
                signal.signal(s, _on_signal)
        except ValueError:  # not the main thread (e.g. a Gradio worker): leave the signals alone
            return


def stop_at_once() -> None:
    """For work with no safe point to reach (a server waiting for requests): Ctrl-C raises KeyboardInterrupt and
    SIGTERM ends the process, as without asyrp's handlers (``run_cli`` puts the previous handlers back at the end)."""
    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def stop_requested() -> int | None:
    """The signal that asked this process to stop, or None."""
    return _STOP["signum"]


def stop_count() -> int:
    """How many stop signals arrived (the tests pause until the second one)."""
    return _STOP["count"]


def reset_stop() -> None:
    _STOP.update(signum=None, count=0)


def check_stop(done: str = "") -> None:
    """At a safe point (everything finished so far is on disk): raise ``Interrupted`` if a stop was asked for.
    ``done`` says what is finished ('3 of 5 images are in <out>')."""
    if _STOP["signum"] is not None:
        raise Interrupted(_STOP["signum"], done)


# -- log files: a full disk under the log is said once, and the run goes on -------------------------------------
def _guard_log_handler(handler: logging.FileHandler) -> None:
    original = handler.handleError

    def handle_error(record: logging.LogRecord) -> None:
        err = sys.exc_info()[1]
        if isinstance(err, OSError) and err.errno in NO_SPACE | NO_PERMISSION:
            logging.getLogger().removeHandler(handler)
            print(
                f"warning: cannot write the log file {handler.baseFilename} ({os.strerror(err.errno).lower()}); "
                "logging to it stopped, the run goes on",
                file=sys.stderr,
                flush=True,
            )
            return
        original(record)

    handler.handleError = handle_error
    handler._asyrp_guarded = True


def install() -> None:
    """Stop handlers, and log files that report a full disk in one line instead of a traceback per record."""
    install_stop_handlers()
    for h in logging.getLogger().handlers:
        if isinstance(h, logging.FileHandler) and not getattr(h, "_asyrp_guarded", False):
            _guard_log_handler(h)


@contextlib.contextmanager
def installed() -> Iterator[None]:
    """``install()`` for the duration of one task; the previous signal handlers come back afterwards (a task run
    from Python, e.g. in a test or a notebook, leaves Ctrl-C as it found it)."""
    saved = {}
    for s in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(ValueError):
            saved[s] = signal.getsignal(s)
    install()  # a stop asked for earlier in this process (a sweep's previous trial) still holds
    try:
        yield
    finally:
        for s, h in saved.items():
            with contextlib.suppress(ValueError, TypeError):
                signal.signal(s, h)
