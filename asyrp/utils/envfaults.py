"""Faults of the environment (full disk, no permission, out of memory, Ctrl-C / SIGTERM, a missing optional package)
turned into the project's one ``error:`` line, with an exit code by kind and a word on how to resume.

Every entry point runs its task through ``asyrp.utils.errors.run_cli``, which calls ``install()`` (stop handlers,
log-file guard) and ``describe()`` on whatever escapes. The table (docs/reliability.md, "Faults of the environment"):

==========  ====  =================================================================================================
kind        exit  raised as
==========  ====  =================================================================================================
input          2  ``AsyrpUserError`` (bad config, path, image; asyrp/utils/errors.py)
no_space       3  ``OSError`` ENOSPC / EDQUOT (disk full, quota exceeded) at a write
permission     4  ``OSError`` EACCES / EPERM / EROFS (permission denied, read-only file system)
memory         5  ``MemoryError``, ``torch.OutOfMemoryError`` (CUDA), torch's "DefaultCPUAllocator: can't allocate"
package        6  ``ModuleNotFoundError`` of an optional package, ``LPIPSWeightsMissing``, ``MissingPackage``
interrupted  130  Ctrl-C (SIGINT); 143 for SIGTERM (a node preempted, ``kill``)
bug            1  anything else: Python's traceback
==========  ====  =================================================================================================

``ASYRP_DEBUG=1`` (or ``HYDRA_FULL_ERROR=1``) keeps the traceback of every one of these.

Where the message can say more, the code that runs says what it is doing: ``register_folder(path, key)`` names the
config key that moves a folder, ``doing(what, batch_key=..., batch=...)`` names the batch to lower on OOM, and
``set_resume(text)`` says how to resume. The atomic writers (asyrp/utils/io.py) attach the path and size they were
writing to the ``OSError`` (``annotate``).

Interruption: the first SIGINT / SIGTERM only asks to stop; loops call ``check_stop(done)`` at their safe points
(after a batch of edits or cache entries is on disk; training: ``asyrp.callbacks.StopOnSignal`` writes last.ckpt),
which raises ``Interrupted``. A second signal raises ``Interrupted`` at once, wherever the process is.
"""
from __future__ import annotations

import contextlib
import errno
import logging
import os
import shutil
import signal
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

EXIT_BUG = 1
EXIT_USER_ERROR = 2
EXIT_NO_SPACE = 3
EXIT_PERMISSION = 4
EXIT_MEMORY = 5
EXIT_PACKAGE = 6
EXIT_SIGINT = 128 + signal.SIGINT    # 130
EXIT_SIGTERM = 128 + signal.SIGTERM  # 143

NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
NO_PERMISSION = {errno.EACCES, errno.EPERM, errno.EROFS}

#: optional packages: import name -> (pip extra of asyrp, pip package, what needs it)
OPTIONAL_PACKAGES = {
    "optuna": ("sweep", "hydra-optuna-sweeper", "the Optuna sweeper (hparams_search=...)"),
    "hydra_plugins.hydra_optuna_sweeper": ("sweep", "hydra-optuna-sweeper", "the Optuna sweeper (hparams_search=...)"),
    "wandb": ("wandb", "wandb", "the W&B logger (logger=wandb)"),
    "tensorboard": ("tensorboard", "tensorboard", "the TensorBoard logger (logger=tensorboard)"),
    "lpips": ("lpips", "lpips", "the LPIPS distance"),
    "gradio": ("app", "gradio", "the editor app (app.py)"),
}


class MissingPackage(Exception):
    """An optional package a chosen option needs is not installed (exit 6)."""

    def __init__(self, module: str, what: str | None = None):
        extra, pip_name, need = OPTIONAL_PACKAGES.get(module, (None, module.split(".")[0], module))
        self.module = module
        how = f"pip install 'asyrp[{extra}]' (or pip install {pip_name})" if extra else f"pip install {pip_name}"
        super().__init__(f"{what or need} needs the package {pip_name}, which is not installed: {how}, then rerun "
                         "the same command")


class PermissionFault(Exception):
    """A folder the run must write to is not writable (found before any work; exit 4)."""


class Interrupted(BaseException):
    """Ctrl-C / SIGTERM: raised at a safe point (or at once on the second signal). A BaseException, like
    KeyboardInterrupt, so that no ``except Exception`` on the way swallows it."""

    def __init__(self, signum: int, done: str = "", at_once: bool = False):
        self.signum, self.done, self.at_once = int(signum), done, at_once
        super().__init__(signal.Signals(self.signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


# -- what the process is doing (for the messages) ----------------------------------------------------------------
@dataclass
class _Context:
    folders: dict  # resolved folder path -> config key that moves it
    doing: list    # stack of (what, batch_key, batch)
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
    _STOP.update(signum=None, count=0)


def _key_for(path: Path | None) -> str | None:
    if path is None:
        return None
    p = str(Path(path).expanduser().absolute())
    best = max((f for f in _CTX.folders if p == f or p.startswith(f.rstrip(os.sep) + os.sep)), key=len, default=None)
    return _CTX.folders.get(best) if best else None


def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)  # pragma: no cover


def annotate(err: OSError, path: str | os.PathLike, size: int | None = None) -> OSError:
    """Attach the file being written (its final name, not the temporary one) and its size to ``err``."""
    if getattr(err, "asyrp_path", None) is None:
        err.asyrp_path = Path(path)
        err.asyrp_size = size
    return err


# -- interruption -----------------------------------------------------------------------------------------------
_STOP: dict = {"signum": None, "count": 0}


def _on_signal(signum, frame) -> None:
    _STOP["count"] += 1
    if _STOP["signum"] is None:
        _STOP["signum"] = signum
    name = "Ctrl-C" if signum == signal.SIGINT else signal.Signals(signum).name
    if _STOP["count"] == 1:
        print(f"\n{name}: stopping at the next safe point (finished work is kept); press Ctrl-C again to stop at "
              "once", file=sys.stderr, flush=True)
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
            print(f"warning: cannot write the log file {handler.baseFilename} ({os.strerror(err.errno).lower()}); "
                  "logging to it stopped, the run goes on", file=sys.stderr, flush=True)
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


# -- permission: before any work ---------------------------------------------------------------------------------
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
                left = left[os.write(fd, left):]
            if room:
                os.fsync(fd)
        finally:
            os.close(fd)
    except OSError as err:
        if err.errno not in NO_PERMISSION:
            raise annotate(err, folder, room or None)
        what = "is on a read-only file system" if err.errno == errno.EROFS else "is not writable (permission denied)"
        where = f"{folder}" if probe == folder else f"{folder} (its parent {probe})"
        raise PermissionFault(f"{where} {what}: nothing was written. Choose another {key}=<folder> or make it "
                              "writable, then rerun the same command") from err
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


# -- the mapping ---------------------------------------------------------------------------------------------------
def _free_bytes(path: Path | None) -> int | None:
    p = path
    while p is not None and not p.exists() and p != p.parent:
        p = p.parent
    try:
        return shutil.disk_usage(p).free if p is not None else None
    except OSError:
        return None


def _resume(default: str = "rerun the same command: it resumes") -> str:
    return _CTX.resume or default


def _oserror_message(err: OSError) -> tuple[int, str] | None:
    if err.errno not in NO_SPACE | NO_PERMISSION:
        return None
    path = getattr(err, "asyrp_path", None) or (Path(err.filename) if err.filename else None)
    size = getattr(err, "asyrp_size", None)
    key = _key_for(path)
    move = f"choose another {key}=<folder>" if key else "write elsewhere"
    where = f" {path}" if path else " a file"
    if err.errno in NO_SPACE:
        cause = "disk quota exceeded" if err.errno == errno.EDQUOT else "no space left on device"
        free = _free_bytes(path) if path else None
        bits = ([_size(size)] if size is not None else []) + ([f"{_size(free)} free there"] if free is not None else [])
        sized = f" ({'; '.join(bits)})" if bits else ""
        # asyrp's writers (annotated) go through a temporary file; a library's own log file may be cut short
        kept = ("nothing was half-written and finished files are kept" if getattr(err, "asyrp_path", None) is not None
                else "finished files are kept")
        msg = f"{cause} while writing{where}{sized}: {kept}. Free some space (or {move}), then {_resume()}"
        return EXIT_NO_SPACE, msg
    cause = "read-only file system" if err.errno == errno.EROFS else "permission denied"
    msg = f"{cause} writing{where}: make the folder writable or {move}, then {_resume()}"
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


def _doing(err: BaseException) -> list:
    return getattr(err, "asyrp_doing", None) or list(_CTX.doing)


def _oom_message(kind: str, stack: list) -> str:
    ctx = [d for d in stack if d[1]]
    what = next((d[0] for d in reversed(stack)), None)
    lower = (f"lower {ctx[-1][1]} (now {ctx[-1][2]})" if ctx and ctx[-1][2] is not None
             else f"lower {ctx[-1][1]}" if ctx else "lower the batch size")
    during = f" while {what}" if what else ""
    return f"out of {kind} memory{during}: {lower} or free memory, then {_resume()}"


def _interrupted_message(err: Interrupted) -> str:
    name = "interrupted (Ctrl-C)" if err.signum == signal.SIGINT else f"terminated ({signal.Signals(err.signum).name})"
    what = next((d[0] for d in reversed(_doing(err))), None)
    how = "stopped at once (second signal)" if err.at_once else "stopped at a safe point"
    parts = [f"{name} {'while ' + what + ': ' if what else ''}{how}"]
    if err.done:
        parts.append(err.done)
    elif err.at_once:
        parts.append("every file written so far is complete")
    return "; ".join(parts) + f". To resume, {_resume('rerun the same command')}"


def _with_doing(new: Interrupted, old: BaseException) -> Interrupted:
    new.asyrp_doing = _doing(old)
    return new


def describe(err: BaseException) -> tuple[int, str] | None:
    """(exit code, one-line message) for a fault of the environment; None for anything else (a bug)."""
    if isinstance(err, Interrupted):
        return err.exit_code, _interrupted_message(err)
    if isinstance(err, KeyboardInterrupt):  # before our handlers were installed, or a library re-raised it
        return EXIT_SIGINT, _interrupted_message(_with_doing(Interrupted(signal.SIGINT, at_once=True), err))
    if isinstance(err, SystemExit) and _STOP["signum"] is not None:  # e.g. Lightning's SIGTERMException
        return 128 + _STOP["signum"], _interrupted_message(_with_doing(Interrupted(_STOP["signum"]), err))
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
        return EXIT_MEMORY, _oom_message(oom, _doing(err))
    return None


def require(module: str, what: str | None = None) -> None:
    """Raise ``MissingPackage`` if ``module`` cannot be imported (checked before any work)."""
    import importlib

    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        raise MissingPackage(module, what) from err


def require_logger_packages(logger_cfg) -> None:
    """The packages behind the configured loggers (logger=wandb / tensorboard / many), before any work."""
    targets = []
    for v in (logger_cfg or {}).values() if hasattr(logger_cfg, "values") else []:
        if v is not None and hasattr(v, "get"):
            targets.append(str(v.get("_target_", "")))
    if any(t.endswith("WandbLogger") for t in targets):
        require("wandb")
    if any(t.endswith("TensorBoardLogger") for t in targets):
        require("tensorboard")
