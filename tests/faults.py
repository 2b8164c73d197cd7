"""Fault injection for the reliability tests: a real SIGKILL at a chosen point of a real process.

- ``KillAtStep``: a Lightning callback (added with ``+callbacks.killer._target_=faults.KillAtStep``, PYTHONPATH=tests)
  that SIGKILLs its own process at the start of the first batch with ``global_step >= $ASYRP_TEST_KILL_AT_STEP``
  (unset: does nothing, so the same command line resumes without it).
- ``python tests/faults.py cache <root> <k>``: builds a tiny inversion cache, SIGKILLed in the middle of writing
  entry k (half of its bytes written).
- ``python tests/faults.py edit <n> <edit.py args...>``: runs edit.py, SIGKILLed after n output PNGs.
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

    from asyrp.data.cache import InversionCache, noise_sources
    from asyrp.tasks import alphas, build_backbone

    arch = {"name": "tiny_ddpm", "family": "ddpm", "checkpoint": None, "beta_schedule": "linear",
            "config": {"image_size": 32, "ch": 32, "ch_mult": [1, 2, 2], "num_res_blocks": 1, "attn_resolutions": [16],
                       "in_channels": 3, "out_ch": 3, "dropout": 0.0, "resamp_with_conv": True}}
    torch.manual_seed(0)
    backbone = build_backbone(arch)
    cache = InversionCache(root, backbone, alphas(arch), n_inv=4, n_gen=4, t0=999, batch_size=4)
    return cache, noise_sources(0, 4)


def _kill_cache_build(root: str, k: int) -> None:
    import io

    import torch

    torch.set_num_threads(1)
    real_save, calls = torch.save, [0]

    def save(obj, f, *a, **kw):
        calls[0] += 1
        if calls[0] == k:  # killed while writing this file: only half of it reaches the disk
            buf = io.BytesIO()
            real_save(obj, buf, *a, **kw)
            half = buf.getvalue()[: len(buf.getvalue()) // 2]
            if hasattr(f, "write"):  # an open file (asyrp.utils.io.atomic_save)
                f.write(half)
                f.flush()
            else:
                with open(f, "wb") as fh:
                    fh.write(half)
            die()
        return real_save(obj, f, *a, **kw)

    torch.save = save
    cache, sources = tiny_cache(root)
    cache.build(sources)


def _kill_edit(n: int, args: list[str]) -> None:
    import runpy

    import torch

    import asyrp.utils.io as io

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


if __name__ == "__main__":
    if sys.argv[1] == "cache":
        _kill_cache_build(sys.argv[2], int(sys.argv[3]))
    elif sys.argv[1] == "edit":
        _kill_edit(int(sys.argv[2]), sys.argv[3:])
