"""Fault injection for the reliability tests: a real SIGKILL at a chosen point of a real process.

- ``KillAtStep``: a Lightning callback (added with ``+callbacks.killer._target_=faults.KillAtStep``, PYTHONPATH=tests)
  that SIGKILLs its own process at the start of the first batch with ``global_step >= $ASYRP_TEST_KILL_AT_STEP``
  (unset: does nothing, so the same command line resumes without it).
- ``python tests/faults.py cache <root> <k>``: builds a tiny inversion cache, SIGKILLed in the middle of writing
  entry k (half of its bytes written).
- ``python tests/faults.py edit <n> <edit.py args...>``: runs edit.py, SIGKILLed after n output PNGs.
- ``python tests/faults.py run <script> <args...>``: runs an entry point (train.py, edit.py, ...) with the faults of
  the environment switched on by these variables (each raises the real exception type at the real place):
  ``ASYRP_TEST_ENOSPC=<glob>[:<n>]`` / ``ASYRP_TEST_EACCES=<glob>``: writing a file whose name matches (from the
  n-th such write on) fails with ENOSPC (when its bytes are flushed: fsync) / EACCES (when its temporary file is
  created);
  ``ASYRP_TEST_OOM=cuda:<max batch>``: ``asyrp.samplers.edit`` on more images than that raises
  ``torch.OutOfMemoryError`` (what CUDA raises); ``ASYRP_TEST_OOM=cpu:<k>``: its k-th call asks the CPU allocator
  for 2**50 bytes, which fails for real;
  ``ASYRP_TEST_PAUSE=<glob>:<n>``: after the n-th written file matching the glob, print ``PAUSED <name>`` and wait
  (up to 60 s) for a stop request (``ASYRP_TEST_PAUSE_SIGNALS=2``: for two signals, the second one stopping at once);
  ``ASYRP_TEST_HIDE=<module>,...``: importing these modules fails as if they were not installed.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import pytorch_lightning as pl

ROOT = Path(__file__).resolve().parents[1]


def die() -> None:
    sys.stdout.flush()
    sys.stderr.flush()
    os.kill(os.getpid(), signal.SIGKILL)


class KillAtStep(pl.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        k = os.environ.get("ASYRP_TEST_KILL_AT_STEP")
        if k is not None and trainer.global_step >= int(k):
            die()


def tiny_cache(root: str | Path):
    """The inversion cache of the tiny_ddpm arch (seed 0 weights) for 4 random samples, 4 steps."""
    import torch

    from asyrp import build
    from asyrp.data.cache import InversionCache, noise_sources
    from asyrp.plan import EditPlan

    arch = {
        "name": "tiny_ddpm",
        "family": "ddpm",
        "checkpoint": None,
        "beta_schedule": "linear",
        "config": {
            "image_size": 32,
            "ch": 32,
            "ch_mult": [1, 2, 2],
            "num_res_blocks": 1,
            "attn_resolutions": [16],
            "in_channels": 3,
            "out_ch": 3,
            "dropout": 0.0,
            "resamp_with_conv": True,
        },
    }
    torch.manual_seed(0)
    backbone = build.backbone(arch)
    cache = InversionCache(root, backbone, build.alpha_bar(arch), EditPlan(n_inv=4, n_gen=4), batch_size=4)
    return cache, noise_sources(0, 4)


def _kill_cache_build(root: str, k: int) -> None:
    import torch

    import asyrp.ops.io as io

    torch.set_num_threads(1)
    real_fsync, calls = io.os.fsync, [0]

    def fsync(fd):
        calls[0] += 1
        if calls[0] == k:  # killed while writing this file: only half of its bytes reached the disk
            os.ftruncate(fd, os.fstat(fd).st_size // 2)
            die()
        return real_fsync(fd)

    io.os.fsync = fsync
    cache, sources = tiny_cache(root)
    cache.build(sources)


def _kill_edit(n: int, args: list[str]) -> None:
    import runpy

    import torch

    import asyrp.ops.io as io

    torch.set_num_threads(1)
    real, calls = io.atomic_write_png, [0]

    def write(img, path):
        out = real(img, path)
        calls[0] += 1
        if calls[0] >= n:
            die()
        return out

    io.atomic_write_png = write
    sys.argv = [str(ROOT / "edit.py"), *args]
    sys.path.insert(0, str(ROOT))
    runpy.run_path(str(ROOT / "edit.py"), run_name="__main__")


def _match(name: str, pattern: str) -> bool:
    import fnmatch

    return fnmatch.fnmatch(name, pattern)


def _install_env_faults() -> None:
    import errno
    import time

    import torch

    import asyrp.ops.io as io

    torch.set_num_threads(1)
    enospc, eacces = os.environ.get("ASYRP_TEST_ENOSPC"), os.environ.get("ASYRP_TEST_EACCES")
    real_fsync, real_tmp = io.os.fsync, io._tmp_beside

    def final_name(fd: int) -> str:  # ".<name>.<random>.tmp" -> "<name>"
        return os.path.basename(os.readlink(f"/proc/self/fd/{fd}"))[1:].rsplit(".", 2)[0]

    enospc, from_n = (
        (enospc.rsplit(":", 1)[0], int(enospc.rsplit(":", 1)[1])) if enospc and ":" in enospc else (enospc, 1)
    )
    seen = [0]

    def fsync(fd):
        if enospc and _match(final_name(fd), enospc):
            seen[0] += 1
            if seen[0] >= from_n:  # the disk is full from the n-th such write on
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    def tmp_beside(path):
        if eacces and _match(Path(path).name, eacces):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(Path(path).parent))
        return real_tmp(path)

    io.os.fsync, io._tmp_beside = fsync, tmp_beside

    pause = os.environ.get("ASYRP_TEST_PAUSE")
    if pause:
        pattern, n = pause.rsplit(":", 1)
        real_write, count = io.atomic_write_bytes, [0]
        want = int(os.environ.get("ASYRP_TEST_PAUSE_SIGNALS", "1"))

        def write(data, path):
            out = real_write(data, path)
            if _match(Path(path).name, pattern):
                count[0] += 1
                if count[0] == int(n):
                    from asyrp.ops.faults import stop_count

                    print(f"PAUSED {Path(path).name}", file=sys.stderr, flush=True)
                    for _ in range(600):  # a long step; signals arrive meanwhile
                        if stop_count() >= want:
                            break
                        time.sleep(0.1)
            return out

        io.atomic_write_bytes = write

    oom = os.environ.get("ASYRP_TEST_OOM")
    if oom:
        import asyrp.samplers as samplers

        kind, arg = oom.split(":")
        real_edit, calls = samplers.edit, [0]

        def edit(backbone, x0, *a, **kw):
            calls[0] += 1
            n = (x0 if x0 is not None else kw["x_T"]).shape[0]
            if kind == "cuda" and n > int(arg):
                raise torch.OutOfMemoryError(
                    "CUDA out of memory. Tried to allocate 2.00 GiB (simulated by tests/faults.py)"
                )
            if kind == "cpu" and calls[0] == int(arg):
                torch.empty(2**50, dtype=torch.uint8)  # 1 PiB: the CPU allocator refuses it
            return real_edit(backbone, x0, *a, **kw)

        samplers.edit = edit

    hide = [m for m in os.environ.get("ASYRP_TEST_HIDE", "").split(",") if m]
    if hide:

        class Hide:
            def find_spec(self, name, path=None, target=None):
                if any(name == m or name.startswith(m + ".") for m in hide):
                    raise ModuleNotFoundError(f"No module named {name!r}", name=name)
                return None

        sys.meta_path.insert(0, Hide())


def _run(script: str, args: list[str]) -> None:
    import runpy

    _install_env_faults()
    sys.argv = [str(ROOT / script), *args]
    sys.path.insert(0, str(ROOT))
    runpy.run_path(str(ROOT / script), run_name="__main__")


if __name__ == "__main__":
    if sys.argv[1] == "cache":
        _kill_cache_build(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "edit":
        _kill_edit(int(sys.argv[2]), sys.argv[3:])
    elif sys.argv[1] == "run":
        _run(sys.argv[2], sys.argv[3:])
