"""experiments/paper_table.py: a paper table end to end under debug=smoke (tiny nets; train, edit the fixed list,
evaluate, the paper-shaped table), its printed commands, and its refusal of a metric whose weights are not given."""

from __future__ import annotations

import csv
import importlib.util
import math
from pathlib import Path

import pytest

from asyrp.experiment import read_table

SCRIPT = Path(__file__).resolve().parents[2] / "experiments" / "paper_table.py"


def _script():
    spec = importlib.util.spec_from_file_location("experiments_paper_table", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_bedroom_table_under_smoke(tmp_path, capsys):
    light = ["trainer.limit_val_batches=0", "callbacks.edit_grid=null"]  # no validation edits: the table is the test
    _script().main(["bedroom", "debug=smoke", *light, "--out", str(tmp_path)])
    head, rows = read_table(tmp_path / "table.md")
    assert head[:3] == ["attribute", "strength", "n"] and "S_dir (ours)" in head and "S_dir (paper)" in head
    assert [r[0] for r in rows] == ["lsun_bedroom_hotel", "lsun_bedroom_princess"]
    for r in rows:
        ours = dict(zip(head, r))
        assert ours["n"] == "2" and math.isfinite(float(ours["S_dir (ours)"])) and float(ours["SSIM (ours)"]) <= 1
        assert ours["S_dir (paper)"] == "none¹" and ours["LPIPS (ours)"] == "absent"  # no weights under smoke
    md = (tmp_path / "table.md").read_text()
    assert "Absent metrics (debug=smoke): lpips: metrics without their networks or weights" in md
    with open(tmp_path / "evaluation.csv") as fh:
        ev = list(csv.DictReader(fh))
    assert [float(r["strength"]) for r in ev] == [0.0, 1.0, 0.0, 1.0]  # each run: its reconstruction, then the edit
    assert float(ev[0]["psnr"]) < float("inf") and ev[0]["psnr_rec"] == "inf"
    # the committed rule picked the inputs: two stand-ins under smoke, both runs scored on the same set
    assert len({r["source_set"] for r in ev}) == 1


def test_print_gives_the_three_entry_points(tmp_path, capsys):
    _script().main(["church", "--print", "--out", str(tmp_path)])
    lines = capsys.readouterr().out.splitlines()
    assert sum(x.startswith("python train.py experiment=church_") for x in lines) == 5
    assert sum(x.startswith("python edit.py arch=lsun_church ") for x in lines) == 5
    assert lines[-1].startswith("python evaluate.py 'runs=[") and "clip=vit_b16" in lines[-1]
    assert not list(tmp_path.iterdir())  # printing runs nothing


def test_a_metric_without_weights_is_refused_before_training(tmp_path, capsys):
    with pytest.raises(SystemExit) as err:
        _script().main(["bedroom", "--out", str(tmp_path)])
    assert err.value.code == 2
    assert "lpips: no LPIPS weights" in capsys.readouterr().err
    assert not (tmp_path / "train").exists()
