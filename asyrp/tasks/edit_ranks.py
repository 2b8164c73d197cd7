"""edit.py on several devices: ``devices=N`` edits the inputs with N processes (ranks), one per device
(``device=cuda``: rank r on cuda:r; ``device=cpu``: N CPU processes, how the tests run it), into one output folder.

Why processes that edit.py starts itself, and not Lightning's predict loop or torchrun: the launching process holds
the output folder's claim for the whole run (one run per folder; its ranks work inside it deliberately and claim
nothing), waits for every rank, and so can say in one line which rank died and which of its images are not done,
and write one manifest and one grid at the end. The ranks share nothing but the folder (each journals its finished
images, asyrp/tasks/edit_done.py), so no process group is needed. Lightning's DistributedSampler pads and interleaves
the images (the batches would not be one process's); under torchrun every rank runs the whole script, and a dead
rank makes torchrun stop the others with its own report.

Same images as one process, byte for byte: the inputs are cut into fixed batches of ``batch_size`` in input order
(``edit_batches``), the same cut whatever the number of ranks or what an earlier attempt finished; ranks take whole
batches in turn; each image draws its noise from its own seed (seed + its index in the inputs, asyrp.samplers.edit);
a batch holding a finished image is edited again whole and only its missing images are written. The one exception:
an out-of-memory retry halves the batches, which changes float rounding (within one 8-bit level).
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import sys
from dataclasses import dataclass, replace
from multiprocessing.connection import wait
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from ..config import as_int, plain
from ..ops import faults
from ..ops.errors import AsyrpUserError, one_line, user_error_from
from ..ops.faults.context import resume_hint
from ..ops.guard import Guard
from .edit_done import Done, done_images
from .edit_request import EditRequest

log = logging.getLogger(__name__)
Batch = list[dict[str, Any]]


def edit_batches(inputs: list[dict[str, Any]], done: Done, batch_size: int) -> list[Batch]:
    """The batches to edit: the fixed cut of ``inputs`` into ``batch_size`` slices, those with an image not done."""
    cut = [inputs[i : i + batch_size] for i in range(0, len(inputs), batch_size)]
    return [b for b in cut if any(it["id"] not in done for it in b)]


def rank_devices(cfg: DictConfig) -> list[str]:
    """The device of each rank: ``devices`` (1: this process; N; -1: every visible GPU) over ``device``."""
    import torch

    dev, n = str(cfg.get("device") or "cpu"), cfg.get("devices", 1)
    n = as_int(1 if n is None else n, "devices", -1)
    if n == 0:
        raise AsyrpUserError("devices=0 must be >= 1 (or -1 for every GPU)")
    if n == 1:
        return [dev]
    kind = torch.device(dev)
    if kind.type not in ("cuda", "cpu") or kind.index is not None:
        raise AsyrpUserError(
            f"devices={n} runs one process per device on device=cuda (rank r on cuda:r) or device=cpu, not "
            f"device={dev}: pass device=cuda (or devices=1)"
        )
    if kind.type == "cpu":
        if n == -1:
            raise AsyrpUserError("devices=-1 (every GPU) needs device=cuda: with device=cpu pass a number of processes")
        return ["cpu"] * n
    count = torch.cuda.device_count()
    n = count if n == -1 else n
    if n < 1 or n > count:
        raise AsyrpUserError(f"devices={n} but {count} CUDA device(s) are visible: pass devices={count} or less")
    return [f"cuda:{r}" for r in range(n)]


@dataclass
class _Rank:
    rank: int
    device: str
    share: list[Batch]
    proc: Any
    conn: Any


def run_ranks(loop_cls: type, req: EditRequest, out: Path, batches: list[Batch], done: Done, devices, guard) -> int:
    """Edit ``batches`` with one process per device, rank r taking batches r, r + N, ... and running
    ``loop_cls(req, out, guard, rank)`` on them (asyrp.tasks.edit.EditLoop); returns the image size. Once every rank
    has ended: a stop asked for stops here (the guard's ``stop``); a rank that died or failed raises
    ``faults.WorkerFailed``, one line naming the rank, what happened and its images not done."""
    ctx, n = multiprocessing.get_context("spawn"), len(devices)
    cfg = OmegaConf.create(plain(req.cfg))  # resolved here: a rank has no Hydra
    ranks: list[_Rank] = []
    try:
        for r, dev in enumerate(devices):
            ranks.append(_start(ctx, loop_cls, replace(req, cfg=cfg), r, dev, out, batches[r::n], done))
        _wait(ranks, guard)
    finally:
        for rk in ranks:
            if rk.proc.is_alive():
                rk.proc.terminate()
            rk.proc.join()
    results = [_outcome(rk) for rk in ranks]
    now = done_images(req, out, check_files=False)
    guard.stop(f"{len(now)} of {len(req.inputs)} images are finished in {out} (manifest.json lists them)")
    failed = [(rk, res) for rk, res in zip(ranks, results) if res[0] != 0]
    if failed:
        lines = [_failure(rk, said, now, n) for rk, (_, said, _) in failed]
        raise faults.WorkerFailed(
            "; ".join(lines) + f". The other images are done; to resume, {resume_hint()}", failed[0][1][0]
        )
    return next(size for _, _, size in results)


def _start(ctx, loop_cls: type, req: EditRequest, r: int, dev: str, out: Path, share, done: Done) -> _Rank:
    cfg = req.cfg.copy()
    cfg.device, cfg.progress = dev, bool(cfg.get("progress", True)) and r == 0  # one bar: rank 0's
    recv, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(
        target=_rank_main,
        args=(loop_cls, replace(req, cfg=cfg), r, out, share, done, os.getpid(), send),
        name=f"asyrp-edit-rank-{r}",
        daemon=True,  # ended with the launching process
    )
    proc.start()
    send.close()
    log.info("rank %d: pid %d on %s, %d images", r, proc.pid, dev, sum(len(b) for b in share))
    return _Rank(r, dev, share, proc, recv)


def _wait(ranks: list[_Rank], guard: Guard) -> None:
    """Until every rank has ended. A stop asked of this process only (SIGTERM: kill, a scheduler) goes on to the
    ranks; Ctrl-C on a terminal reached them already."""
    told = False
    while any(rk.proc.is_alive() for rk in ranks):
        wait([rk.proc.sentinel for rk in ranks if rk.proc.is_alive()], timeout=0.5)
        if guard.stop_asked() and not told:
            told = True
            if faults.stop_requested() != signal.SIGINT:
                for rk in ranks:
                    if rk.proc.is_alive():
                        os.kill(rk.proc.pid, signal.SIGTERM)


def _outcome(rk: _Rank) -> tuple[int, str, int | None]:
    """(exit code: 0, the rank's fault's, or 128 + the signal that killed it; its one line; the image size)."""
    try:
        code, text, size = rk.conn.recv() if rk.conn.poll() else (None, "", None)
    except (EOFError, OSError):
        code, text, size = None, "", None
    exit_code = rk.proc.exitcode
    if exit_code is not None and exit_code < 0:
        return 128 - exit_code, f"was killed ({signal.Signals(-exit_code).name})", None
    if code is None:
        return exit_code or faults.EXIT_BUG, f"ended with exit code {exit_code} before reporting", None
    return code, text, size


def _failure(rk: _Rank, said: str, now: Done, n: int) -> str:
    ids = [it["id"] for b in rk.share for it in b]
    left = [i for i in ids if i not in now]
    lost = ", ".join(left[:5]) + (", ..." if len(left) > 5 else "")
    what = f"{len(left)} of its {len(ids)} images are not done ({lost})" if left else "its images are all done"
    return f"rank {rk.rank} of {n} ({rk.device}, pid {rk.proc.pid}) {said}: {what}"


class _RankGuard:
    """A rank's guard: its own stop requests, and a stop once the launching process is gone (killed: nobody would
    write the manifest; the rerun finishes the work)."""

    def __init__(self, parent: int):
        self.parent = parent

    def stop(self, done: str) -> None:
        if os.getppid() != self.parent:
            raise faults.Interrupted(signal.SIGTERM, "the launching process is gone")
        faults.GUARD.stop(done)

    def stop_asked(self) -> bool:
        return faults.GUARD.stop_asked() or os.getppid() != self.parent

    def doing(self, what: str, batch_key: str | None = None, batch: int | None = None):
        return faults.GUARD.doing(what, batch_key, batch)

    def take_signals(self) -> None:
        faults.GUARD.take_signals()


def _rank_main(loop_cls: type, req: EditRequest, r: int, out: Path, share, done: Done, parent: int, conn) -> None:
    """One rank: edit its batches, send (0 or the fault's exit code, one line, image size), exit with that code."""
    logging.basicConfig(level=logging.INFO, format=f"[%(asctime)s][rank {r}][%(levelname)s] - %(message)s")
    code, text, size = 0, "", None
    with faults.installed():
        try:
            import torch

            if req.cfg.device.startswith("cuda"):
                torch.cuda.set_device(req.cfg.device)
            loop = loop_cls(req, out, _RankGuard(parent), r)
            loop.done = dict(done)
            loop.load_networks()
            loop.run(share)
            size = loop.size
        except BaseException as err:  # noqa: BLE001 - told to the launching process in one line
            code, text = _describe(err)
    conn.send((code, text, size))
    conn.close()
    sys.exit(code)


def _describe(err: BaseException) -> tuple[int, str]:
    """(exit code, what happened to the rank, as the launching process says it)."""
    if isinstance(err, faults.Interrupted):
        return err.exit_code, f"was stopped ({signal.Signals(err.signum).name})"
    fault = faults.describe(err)
    if fault is not None:
        return fault[0], f"failed: {fault[1]}"
    user = err if isinstance(err, AsyrpUserError) else user_error_from(err) if isinstance(err, Exception) else None
    if user is not None:
        return faults.EXIT_USER_ERROR, f"failed: {one_line(user)}"
    import traceback

    traceback.print_exc()  # a bug: its traceback in this rank's output
    return faults.EXIT_BUG, f"failed: {type(err).__name__}: {one_line(err)}"
