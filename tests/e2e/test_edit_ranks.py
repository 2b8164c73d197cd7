"""edit.py devices=2 (two CPU processes) writes the same bytes as one process; a killed rank is one error line, and
the rerun edits only what is missing (checked by digest) and ends with the one-process result."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import images, tiny_hfunction_file

from asyrp.config import compose
from asyrp.ops.io import atomic_write_png
from asyrp.tasks.edit import edit

ROOT = Path(__file__).resolve().parents[2]
# 5 images in batches of 2: [0, 1] and [4] go to rank 0, [2, 3] to rank 1. t_boost=500: the step from t=333 draws
# each image's boosting noise (from its own seed), so a rank or batch mix-up would show in the bytes
SETTINGS = ["arch=tiny_ddpm", "batch_size=2", "plan.t_boost=500", "progress=false", "grid_rows=3"]
# a rank that writes img_3.png dies (SIGKILL) at its rename, the image written to its temporary file only
DIE_AT_RENAME = """import os, signal
_target, _replace = os.environ.get("ASYRP_TEST_DIE_AT"), os.replace
def _replace_or_die(src, dst, *a, **k):
    if _target and os.path.basename(str(dst)) == _target:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *a, **k)
os.replace = _replace_or_die
"""


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("ranks")
    tiny_hfunction_file(d)
    faces = d / "faces"
    for i, img in enumerate(images(5, size=32, seed=4)):
        atomic_write_png(img, faces / f"img_{i}.png")
    args = [*SETTINGS, f"checkpoint={d / 'hf.pt'}", f"input_dir={faces}"]
    one = edit(compose("edit", [*args, f"output_dir={d / 'one'}"], output_dir=d / "r1"))
    assert one["edited"] == 5
    other_seed = edit(compose("edit", [*args, "seed=1", f"output_dir={d / 'seed1'}"], output_dir=d / "r2"))
    assert (d / "one" / "img_2.png").read_bytes() != (other_seed["output_dir"] / "img_2.png").read_bytes()
    (d / "site").mkdir()
    (d / "site" / "sitecustomize.py").write_text(DIE_AT_RENAME)
    return {"dir": d, "args": args, "one": d / "one"}


def edit_py(world, out: Path, die_at: str | None = None) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", WANDB_MODE="offline", PYTHONPATH=f"{world['dir'] / 'site'}:{ROOT}")
    if die_at:
        env["ASYRP_TEST_DIE_AT"] = die_at
    return subprocess.run(
        [sys.executable, "edit.py", *world["args"], "devices=2", f"output_dir={out}", f"hydra.run.dir={out}_run"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def same_files(a: Path, b: Path) -> None:
    names = sorted(p.name for p in a.iterdir())
    assert names == sorted(p.name for p in b.iterdir())  # no journal, lock or temporary file left either
    assert [n for n in names if n.endswith(".png")] == ["grid.png"] + [f"img_{i}.png" for i in range(5)]
    for n in names:
        assert (a / n).read_bytes() == (b / n).read_bytes(), n  # images, grid and manifest, byte for byte


@pytest.mark.slow
def test_two_processes_write_the_bytes_of_one(world):
    out = world["dir"] / "two"
    p = edit_py(world, out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "rank 1: pid" in p.stdout and "on cpu, 2 images" in p.stdout  # [2, 3]
    same_files(out, world["one"])
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and all(len(it["digests"]) == 1 for it in manifest["inputs"])


@pytest.mark.slow
def test_a_killed_rank_is_one_line_and_the_rerun_completes_it(world):
    out = world["dir"] / "killed"
    p = edit_py(world, out, die_at="img_3.png")
    assert p.returncode == 128 + 9, p.stderr[-3000:]
    errors = [line for line in p.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in p.stderr, p.stderr[-3000:]
    assert errors[0].startswith("error: rank 1 of 2 (cpu, pid "), errors[0]
    assert errors[0].endswith(
        ") was killed (SIGKILL): 1 of its 2 images are not done (img_3). The other images are done; to resume, "
        f"rerun the same command with output_dir={out}: it edits only the images not done yet"
    ), errors[0]
    manifest = json.loads((out / "manifest.json").read_text())
    assert not manifest["complete"] and [it["done"] for it in manifest["inputs"]] == [True, True, True, False, True]
    # the dead rank's temporary img_3 file is removed once every rank has ended; no grid for an unfinished run
    assert not (out / "img_3.png").exists() and not list(out.glob(".*.tmp")) and not (out / "grid.png").exists()
    # a finished file changed since (a copy gone wrong): its digest no longer matches, so it is edited again
    (out / "img_4.png").write_bytes((out / "img_0.png").read_bytes())
    p = edit_py(world, out)
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"{out}: 3 of 5 images already done with these settings, editing the other 2" in p.stdout
    same_files(out, world["one"])
