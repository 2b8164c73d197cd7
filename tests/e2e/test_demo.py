"""make demo scaled down (experiments/demo.py --tiny: a few faces, one epoch, two seeds): what it prints and writes for
both attributes and their composition, through its own caches, parallel trainings and edits."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
VERDICT = r"success=\d\.\d\d preserved=\d\.\d\d \(targets 0\.80 / 0\.90: (met|NOT met)\)"


@pytest.mark.slow
def test_tiny_demo_prints_per_seed_lines_for_both_attributes_and_the_composition(tmp_path):
    out = tmp_path / "demo"
    env = {**os.environ, "WANDB_MODE": "offline", "ASYRP_PROGRESS": "off"}
    r = subprocess.run(
        [sys.executable, "experiments/demo.py", "--tiny", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = r.stdout.splitlines()
    second = "synthfaces_glasses_twins"
    for s in (0, 1):
        assert any(re.fullmatch(rf"demo: seed {s}: {VERDICT}", x) for x in lines), r.stdout
        assert any(re.fullmatch(rf"demo: {second} seed {s} \(\d+ faces without it\): {VERDICT}", x) for x in lines)
        assert any(
            re.fullmatch(rf"demo: smiling \+ {second} seed {s}: both=\d\.\d\d others kept=\d\.\d\d", x) for x in lines
        )
    assert re.fullmatch(r"demo: success=.* \(worst of seeds \[0, 1\]; .*metrics=.*metrics\.json", lines[-2])
    assert lines[-1].startswith(f"demo: {second}: success=")
    # every training and edit ran as a user reruns it: one process per attribute and per kind of edit (Hydra
    # multiruns over the seeds), each process's output in its own log, each seed's run in its own folder
    assert sum(x.startswith("$ python train.py -m") for x in lines) == 2
    assert sum(x.startswith("$ python edit.py -m") for x in lines) == 3
    logs = {p.name: p.read_text() for p in (out / "logs").glob("*.log")}
    assert set(logs) == {
        "train_smiling.log",
        "train_second.log",
        "edit_smiling.log",
        "edit_second.log",
        "edit_both.log",
    }
    for a in ("smiling", "second"):
        for s in (0, 1):
            assert (out / a / f"train_s{s}" / "checkpoints" / "hfunction.pt").is_file()
    for k in ("smiling", "second", "both"):
        for s in (0, 1):
            assert len(list((out / "edits" / k / f"s{s}" / "edited").glob("face_*.png"))) == 8
    # each attribute's cache is built once, by its first seed's training; the next seed reads it
    for a in ("smiling", "second"):
        assert logs[f"train_{a}.log"].count("computing") >= 1
        assert "computing" not in logs[f"train_{a}.log"].split("sweep: trial 1 done")[1]
    # the composition ran with each file's stored strength and hold
    cfg = (out / "edits" / "both" / "s1" / ".hydra" / "config.yaml").read_text()
    assert "strength: null" in cfg and "coeffs: null" in cfg
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["seeds"]) == {"0", "1"} and set(m["second"]["seeds"]) == {"0", "1"}
    assert set(m["composition"]["seeds"]) == {"0", "1"}
    assert m["second"]["experiment"] == second and {"success", "preserved", "met"} <= set(m["second"]["seeds"]["0"])
    assert len(m["grid_columns"]) == 4 and (out / "grid.png").is_file()
