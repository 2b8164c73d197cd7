"""Who owns an output folder: a training run folder (``hydra.run.dir``), an edit or a discover ``output_dir``.

One folder holds the outputs of one run. A rerun with the same settings resumes it (train: from its own
``last.ckpt``; edit: only the images not done yet); another run's outputs are refused with one error line unless
``overwrite=true``. The train run folder is recognised by its stamp (``.asyrp_run.json``, a fingerprint of the
config), the edit folder by the fingerprint in its ``manifest.json``; a discover folder that already holds directions
(``*.pt``, ``directions.json``) is refused without ``overwrite=true`` (discover has nothing to resume).

Claiming a folder is atomic and exclusive for the life of the run: the claim is an OS lock on ``.asyrp.lock``
in the folder (asyrp/ops/locks.py), taken before anything is written there, and the settings check runs under
it. The kernel releases it when the process ends, also on ``kill -9``; the next run then takes over (and logs that
it did). While a run holds a folder, a second run is refused at once with one error line, never made to wait:
with other settings it is told that the folder holds another run's outputs, with the same settings that a run is in
progress (who, since when): rerunning after it ends resumes or finds the work done. Waiting was not chosen because
a run that sits silent behind another looks hung, and ``overwrite=true`` must never reach a folder in use.

A claim lasts until the function decorated with ``@holds_claims`` that took it returns (``train``/``edit``), or
``release_all`` / the end of the process (the Hydra callback's claim on the train run folder, taken before Hydra
writes ``.hydra/``). Claiming a folder this thread already holds returns that claim (the callback, then the task).

Used by the tasks (asyrp/tasks/) and by the Hydra callback (asyrp/ops/hydra_callbacks.py).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import hashlib
import json
import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from omegaconf import DictConfig, OmegaConf

from . import locks
from .errors import AsyrpUserError

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

RUN_STAMP = ".asyrp_run.json"
MANIFEST = "manifest.json"
JOURNALS = ".edit-done.*.jsonl"  # an edit run's per-process records of finished images (asyrp/tasks/edit_done.py)
LOCK = ".asyrp.lock"
_NOUN = {"train": "training run", "edit": "edit run", "discover": "discover run"}
_A = {"train": "a", "edit": "an", "discover": "a"}
_WHERE = {"train": "hydra.run.dir", "edit": "output_dir", "discover": "output_dir"}
_AFTER = {"discover": ""}  # what rerunning after the holder ends does (discover: refused, its directions are there)


# -- claims: one process owns a folder for the life of its run -------------------------------------------------------
class Claim:
    """This process's hold on ``folder``; ``release`` lets go (and removes the folder if the claim made it and
    nothing was written into it)."""

    def __init__(self, folder: Path, lock: locks.FileLock, created: bool):
        self.folder, self.lock, self.created = folder, lock, created
        self.key = _key(folder)

    def release(self) -> None:
        _HELD.pop(self.key, None)
        self.lock.release()
        if self.created:
            with contextlib.suppress(OSError):
                self.folder.rmdir()  # only when empty: a run refused or stopped before writing leaves nothing


_HELD: dict[str, Claim] = {}  # (thread, folder) -> claim: every claim this process holds
_SCOPES = threading.local()  # per thread: a stack of lists, the claims taken inside each @holds_claims call


def _key(folder: Path) -> str:
    return f"{threading.get_ident()}:{os.path.realpath(folder)}"


def _scopes() -> list[list[Claim]]:
    if not hasattr(_SCOPES, "stack"):
        _SCOPES.stack = []
    return _SCOPES.stack


def holds_claims(fn: F) -> F:
    """Folders claimed while ``fn`` runs are released when it returns or raises."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        taken: list[Claim] = []
        _scopes().append(taken)
        try:
            return fn(*args, **kwargs)
        finally:
            _scopes().remove(taken)
            for claim in reversed(taken):
                claim.release()

    return wrapper  # type: ignore[return-value]


@atexit.register
def release_all() -> None:
    """Let go of every claim of this process (at exit; the kernel would drop the locks, this removes the files)."""
    for claim in list(_HELD.values()):
        claim.release()


def launching_rank() -> bool:
    """False in the processes a DDP launcher starts for ranks > 0: they work inside the folder rank 0 claimed."""
    return all(int(os.environ.get(k) or 0) == 0 for k in ("RANK", "LOCAL_RANK", "NODE_RANK"))


def claim_folder(folder: str | Path, task: str, fingerprint: str) -> tuple[Claim, bool]:
    """Hold ``folder`` for ``task`` (created if missing); (claim, True if taken now, False if this thread held it).
    Held by another process: one error line, telling a run in progress with the same settings from another run."""
    folder = Path(folder).expanduser()
    held = _HELD.get(_key(folder))
    if held is not None:
        return held, False
    created = not folder.exists()
    try:
        lock = locks.acquire(folder / LOCK, {"task": task, "fingerprint": fingerprint})
    except locks.LockBusy as busy:
        raise _busy_error(folder, task, fingerprint, busy.holder) from None
    claim = Claim(folder, lock, created)
    _HELD[_key(folder)] = claim
    if _scopes():
        _scopes()[-1].append(claim)
    return claim, True


def _busy_error(folder: Path, task: str, fingerprint: str, holder: dict[str, Any]) -> AsyrpUserError:
    who, where = locks.describe(holder), _WHERE.get(task, "folder")
    if holder.get("task") == task and holder.get("fingerprint") == fingerprint:
        run = f"{_A.get(task, 'a')} {_NOUN.get(task, task)}"
        after = _AFTER.get(task, " (rerunning then resumes it or finds it done)")
        return AsyrpUserError(
            f"{folder} is in use: {run} with the same settings is in progress there ({who}); wait "
            f"for it to end{after}, or choose another {where}"
        )
    other = _NOUN.get(str(holder.get("task")), "run")
    return AsyrpUserError(
        f"{folder} holds the outputs of another {other} (other settings), in progress there ({who}): "
        f"choose another {where}"
    )


@contextlib.contextmanager
def _released_on_error(claim: Claim, fresh: bool) -> Iterator[None]:
    try:
        yield
    except BaseException:
        if fresh:
            claim.release()
        raise


_VOLATILE = ("hydra", "ckpt_path", "overwrite", "progress", "perf")  # perf: how fast, not what is trained


# -- train: the run folder ------------------------------------------------------------------------------------------
def run_fingerprint(cfg: DictConfig) -> str:
    """Digest of the task config as composed (interpolations unresolved; resume/overwrite switches left out)."""
    node = {k: cfg._get_node(k) for k in cfg if k not in _VOLATILE}
    text = OmegaConf.to_yaml(OmegaConf.create({k: v for k, v in node.items()}), resolve=False)
    return hashlib.blake2b(text.encode(), digest_size=12).hexdigest()


def check_run_dir(run_dir: str | Path, fingerprint: str, overwrite: bool = False) -> str:
    """ "new" (nothing there), "same" (a previous attempt of this very run: resume) or "overwrite" (another run's
    outputs, replaced because overwrite=true); another run's outputs without overwrite=true is an error."""
    run_dir = Path(run_dir)
    stamp = run_dir / RUN_STAMP
    ours = [run_dir / d for d in ("checkpoints", "images")]
    if stamp.is_file():
        try:
            old = json.loads(stamp.read_text()).get("fingerprint")
        except (OSError, ValueError):
            old = None
        if old == fingerprint:
            return "same"
    elif not any(d.is_dir() and any(d.iterdir()) for d in ours):
        return "new"
    if overwrite:
        return "overwrite"
    raise AsyrpUserError(
        f"{run_dir} already holds the outputs of another training run (other settings): pass "
        "overwrite=true to replace them, or choose another hydra.run.dir (rerunning the same command "
        "with the same hydra.run.dir resumes it)"
    )


def hold_run_dir(run_dir: str | Path, fingerprint: str, overwrite: bool = False) -> str:
    """Claim the train run folder, then ``check_run_dir`` under the claim (refused: released again)."""
    claim, fresh = claim_folder(run_dir, "train", fingerprint)
    with _released_on_error(claim, fresh):
        return check_run_dir(run_dir, fingerprint, overwrite)


def claim_train_dir(cfg: DictConfig, write: bool = True) -> Path | None:
    """Claim and check the run folder (see ``hold_run_dir``), stamp it, and return last.ckpt when the same run
    resumes. ``write=False`` (DDP ranks > 0 re-running the script) only reads: the launching rank holds and has
    stamped it already."""
    from .io import atomic_write_json

    out = Path(str(cfg.paths.output_dir))
    fp = run_fingerprint(cfg)
    overwrite = bool(cfg.get("overwrite", False))
    state = hold_run_dir(out, fp, overwrite) if write else check_run_dir(out, fp, overwrite)
    last = out / "checkpoints" / "last.ckpt"
    if not write:
        return last if state == "same" and cfg.get("ckpt_path") is None and last.is_file() else None
    if state == "overwrite":
        for d in ("checkpoints", "images", "csv"):
            shutil.rmtree(out / d, ignore_errors=True)
        log.warning("overwrite=true: removed the previous run's checkpoints/images/csv in %s", out)
    atomic_write_json({"task": "train", "fingerprint": fp}, out / RUN_STAMP)
    if state == "same" and cfg.get("ckpt_path") is None and last.is_file():
        log.warning("%s holds an unfinished attempt of this run: resuming from %s", out, last)
        return last
    return None


# -- edit: the output folder ----------------------------------------------------------------------------------------
def claim_edit_dir(out: str | Path, fingerprint: str, overwrite: bool = False) -> bool:
    """Claim ``out`` (see the module docstring), then: True when it holds an earlier attempt of this very edit run
    (resume); False when it is new, or when another run's listed outputs were removed because ``overwrite=true``.
    Another edit run's outputs, or PNGs no edit run wrote, without overwrite=true: one error, nothing touched."""
    out = Path(out)
    claim, fresh = claim_folder(out, "edit", fingerprint)
    with _released_on_error(claim, fresh):
        return _check_edit_dir(out, fingerprint, overwrite)


def _check_edit_dir(out: Path, fingerprint: str, overwrite: bool) -> bool:
    manifest_path = out / MANIFEST
    if manifest_path.is_file():
        try:
            prev = json.loads(manifest_path.read_text())
        except (OSError, ValueError):
            prev = {}
        if prev.get("fingerprint") == fingerprint and not overwrite:
            return True
        if not overwrite:
            raise AsyrpUserError(
                f"{out} holds the outputs of another edit run (other settings or h-functions): "
                "pass overwrite=true to replace them, or choose another output_dir (rerunning "
                "with the same settings resumes)"
            )
        prev_files = [n for it in prev.get("inputs", []) for n in it.get("outputs", [])] + ["grid.png"]
        for name in prev_files:
            (out / str(name)).unlink(missing_ok=True)
        for journal in out.glob(JOURNALS):
            journal.unlink()
        log.warning("overwrite=true: removed the outputs of the previous run in %s", out)
        return False
    if out.is_dir() and any(p.suffix.lower() == ".png" for p in out.iterdir()) and not overwrite:
        raise AsyrpUserError(
            f"{out} already holds PNG files that are not from an edit run: pass overwrite=true to "
            "write there anyway, or choose another output_dir"
        )
    return False


# -- discover: the output folder ------------------------------------------------------------------------------------
def claim_discover_dir(out: str | Path, fingerprint: str, overwrite: bool = False) -> None:
    """Claim ``out`` for a discover run (see the module docstring), then: directions already there (``*.pt``,
    ``directions.json``) are an error without ``overwrite=true``, and removed with it."""
    out = Path(out)
    claim, fresh = claim_folder(out, "discover", fingerprint)
    with _released_on_error(claim, fresh):
        old = list(out.glob("*.pt")) + ([out / "directions.json"] if (out / "directions.json").is_file() else [])
        if old and not overwrite:
            raise AsyrpUserError(
                f"{out} already holds directions ({old[0].name}, ...): pass overwrite=true to replace "
                "them, or choose another output_dir"
            )
        for p in old:
            p.unlink()
