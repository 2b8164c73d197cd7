"""One contender of a race test (tests/e2e/test_concurrency.py): a real process started together with others.

    python tests/racer.py <barrier> edit <edit.py args...>    # edit.py as a script
    python tests/racer.py <barrier> train <train.py args...>  # train.py as a script
    python tests/racer.py <barrier> discover <discover.py args...>  # discover.py as a script
    python tests/racer.py <barrier> cache <root>               # builds the tiny inversion cache (faults.tiny_cache)
    python tests/racer.py <barrier> hold <marker> <edit.py args...>  # edit.py that stops for good after its
                                                                     # first PNG, once <marker> is written
    python tests/racer.py <barrier> hold_discover <marker> <discover.py args...>  # discover.py that stops for good
                                                                                  # after its first file

Each process imports everything first, then announces itself (``<barrier>.ready.<pid>``) and waits for the file
``<barrier>`` to appear (``-``: no barrier), so the contenders meet the shared folder within milliseconds.
"""

from __future__ import annotations

import json
import logging
import os
import runpy
import sys
import time
from pathlib import Path

import torch

import asyrp.ops.io as io
import asyrp.tasks.edit  # noqa: F401 - imported before the barrier: the race starts at the work, not at the imports

ROOT = Path(__file__).resolve().parents[1]


def wait_for(barrier: str) -> None:
    if barrier == "-":
        return
    Path(f"{barrier}.ready.{os.getpid()}").touch()
    while not os.path.exists(barrier):
        time.sleep(0.002)


def script(name: str, args: list[str]) -> None:
    sys.argv = [str(ROOT / name), *args]
    runpy.run_path(str(ROOT / name), run_name="__main__")


def build_cache(root: str) -> None:
    from faults import tiny_cache

    cache, sources = tiny_cache(root)
    computed, compute = [], cache.compute
    cache.compute = lambda chunk, x0: (computed.extend(s.id for s in chunk), compute(chunk, x0))[1]
    wait_for(sys.argv[1])
    cache.build(sources)
    print(json.dumps({"computed": computed}))


def hold_after_first(writer: str, marker: str, name: str, args: list[str]) -> None:
    """Run the script ``name``; once ``io.<writer>`` has written its first file, write ``marker`` and hang."""
    real = getattr(io, writer)

    def write(data, path):
        out = real(data, path)
        Path(marker).write_text(str(os.getpid()))
        while True:  # the claim stays held until this process is killed
            time.sleep(1)
        return out

    setattr(io, writer, write)
    script(name, args)


if __name__ == "__main__":
    torch.set_num_threads(1)
    logging.basicConfig(level=logging.INFO)
    barrier, mode, rest = sys.argv[1], sys.argv[2], sys.argv[3:]
    if mode == "cache":
        build_cache(rest[0])
    elif mode == "hold":
        wait_for(barrier)
        hold_after_first("atomic_write_png", rest[0], "edit.py", rest[1:])
    elif mode == "hold_discover":
        wait_for(barrier)
        hold_after_first("atomic_write_bytes", rest[0], "discover.py", rest[1:])
    else:
        wait_for(barrier)
        script({"edit": "edit.py", "train": "train.py", "discover": "discover.py"}[mode], rest)
