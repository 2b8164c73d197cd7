"""The experiment scripts run end to end on the tiny random configs (--smoke) and write their tables.

They measure nothing there (random backbone, CLIP and h-functions): these tests only check the plumbing, the table
columns and that every number is finite.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

EXPERIMENTS = Path(__file__).resolve().parents[2] / "experiments"
TINY = ["--arch", "tiny_ddpm", "--clip", "tiny", "--smoke", "--threads", "1"]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _table(path: Path) -> tuple[list[str], list[list[str]]]:
    from asyrp.experiment import read_table

    return read_table(path)


def _finite(cell: str) -> bool:
    try:
        return math.isfinite(float(cell))
    except ValueError:
        return False


def _check(md: Path, columns: list[str], numeric: list[str]) -> list[list[str]]:
    assert md.is_file(), md
    header, rows = _table(md)
    assert header == columns
    assert rows
    for r in rows:
        assert len(r) == len(columns)
        for c in numeric:
            assert _finite(r[columns.index(c)]), (md.name, c, r)
    return rows


def test_baselines_smoke(tmp_path):
    mod = _script("baselines")
    assert mod.main(TINY + ["--out", str(tmp_path / "baselines")]) == 0
    rows = _check(
        tmp_path / "baselines" / "baselines.md",
        mod.COLUMNS,
        ["mean_delta_norm", "clip_dir", "clip_text", "psnr", "ssim"],
    )
    assert [r[0] for r in rows] == [
        "reconstruction",
        "asyrp",
        "symmetric",
        "eps_shift (as trained)",
        "x_shift (as trained)",
        "eps_shift (matched)",
        "x_shift (matched)",
    ]
    # no oracle for the tiny world: its columns say so instead of inventing numbers
    assert {r[mod.COLUMNS.index("success")] for r in rows} == {"n/a"}
    assert (tmp_path / "baselines" / "baselines.png").is_file()
    assert (tmp_path / "baselines" / "baselines.csv").is_file()


def test_properties_smoke(tmp_path):
    mod = _script("properties")
    assert mod.main(TINY + ["--out", str(tmp_path / "properties")]) == 0
    rows = _check(tmp_path / "properties" / "properties.md", mod.COLUMNS, ["value"])
    assert {r[0] for r in rows} == set(mod.PROPERTIES)
    for png in ("homogeneity", "linearity", "consistency"):
        assert (tmp_path / "properties" / f"{png}.png").is_file()


def test_properties_linearity_of_a_linear_world():
    """r2 of exactly linear data is 1, of symmetric data around a parabola's vertex 0."""
    import torch

    mod = _script("properties")
    c = torch.tensor([-1.0, 0.0, 1.0, 2.0])
    assert mod.r2(c, 3 * c + 1)[0] == pytest.approx(1.0)
    assert mod.r2(c, 3 * c + 1)[1] == pytest.approx(3.0)
    c = torch.tensor([-1.0, 0.0, 1.0])
    assert mod.r2(c, c**2)[0] == pytest.approx(0.0, abs=1e-12)


def test_interval_smoke(tmp_path):
    """experiments/interval.py in the experiment world: the summary table and every output file."""
    mod = _script("interval")
    assert mod.main(TINY + ["--out", str(tmp_path / "curves")]) == 0
    rows = _check(tmp_path / "curves" / "curves.md", mod.COLUMNS, ["value"])
    assert [r[0] for r in rows[:2]] == ["t_edit (text cosine 1)", "t_boost"]
    assert rows[-1][0] == "t_edit for synthfaces_smiling"
    for name in ("curves.png", "curves.csv", "interval_curves.png", "interval_curves.csv"):
        assert (tmp_path / "curves" / name).is_file(), name


def test_global_vs_implicit_smoke_trains_through_the_task(tmp_path):
    mod = _script("global_vs_implicit")
    out = tmp_path / "exp" / "global_vs_implicit"
    assert mod.main(TINY + ["--train", "--out", str(out)]) == 0
    rows = _check(
        out / "global_vs_implicit.md", mod.COLUMNS, ["params", "clip_dir", "clip_text", "psnr", "ssim", "score_change"]
    )
    assert [r[0] for r in rows] == ["delta_block", "global"]
    assert all(r[mod.COLUMNS.index("provenance")].startswith("trained:") for r in rows)
    # trained through asyrp.tasks.train into the shared h-function folder next to the output
    assert len(list((tmp_path / "exp" / "_hfunctions").glob("*/*/checkpoints/hfunction.pt"))) == 2


def test_t0_reaches_training_and_the_walk(tmp_path):
    """--t0 makes the world invert to t0 and edit in [t0, t_edit], and the h-function it trains is trained there."""
    import torch

    from asyrp.experiment import base_parser, setup
    from asyrp.hfunctions import read_hfunction_file

    def world(*extra):
        return setup(base_parser("t0", None).parse_args(TINY + list(extra)))

    w = world("--train", "--t0", "600", "--t-edit", "300", "--out", str(tmp_path / "exp" / "a"))
    assert w.t0 == 600
    f, _ = w.hfunction("smiling")
    meta = read_hfunction_file(next((tmp_path / "exp" / "_hfunctions").glob("*/*/checkpoints/hfunction.pt")))
    assert (meta["edit"]["t0"], meta["edit"]["t_edit"]) == (600, 300)
    assert max(w.edit(w.invert(w.x), f).seq_gen) == 600
    # the default is the paper's [T, t_edit]; a different t0 is a different walk
    w999 = world("--out", str(tmp_path / "exp" / "b"))
    assert w999.t0 == 999
    assert not torch.allclose(w.invert(w.x), w999.invert(w999.x))


def test_ceiling_writes_the_rows_of_the_doc_table(tmp_path, capsys):
    """experiments/ceiling.py on the shipped synthfaces models, shrunk (2 faces, 6 steps, 1 iteration): every row the
    docs/results.md table shows is written with its fields, a rerun skips them, and --table prints them."""
    import json

    mod = _script("ceiling")
    out = tmp_path / "ceiling"
    argv = [
        "--attributes",
        "glasses",
        "--windows",
        "400:250",
        "--n-faces",
        "2",
        "--steps",
        "6",
        "--iters",
        "1",
        "--n-train",
        "2",
        "--epochs",
        "1",
        "--batch",
        "2",
        "--out",
        str(out),
    ]
    mod.main(argv)
    mod.main(argv)  # resumable: every row is found done
    rows = [json.loads(line) for line in (out / "rows.jsonl").read_text().splitlines()]
    assert [(r["window"], r["mode"]) for r in rows] == [("-", "true_render")] + [
        ("[400, 250]", m) for m in ("floor", "target_rec", "per_face", "f_ht")
    ]
    heads = {f"preserved/{h}" for h in ("mouth", "hair_colour", "hair_length", "hat", "skin", "background")}
    for r in rows:
        assert r["attribute"] == "glasses" and r["n_faces"] == 2
        assert 0 <= r["success"] <= 1 and 0 <= r["preserved"] <= 1 and r["psnr_true"] > 0
        assert {k for k in r if k.startswith("preserved/")} == heads
    for r in rows[3:]:
        assert {"final_loss", "first_loss", "tail_drop", "converged"} <= set(r) and r["final_loss"] > 0
    assert rows[-1]["held_out_loss"] > 0 and rows[0]["success"] == 1.0  # the oracle knows the true render
    assert rows[2]["success"] == 1.0 and rows[1]["success"] == 0.0  # the true edit's own walk vs. doing nothing
    capsys.readouterr()
    mod.main(["--table", "--out", str(out)])
    table = capsys.readouterr().out
    assert table.startswith("| attribute | window | mode | success | preserved | kept per other head |")
    assert table.count("| glasses |") == 5


def test_disentangle_table_resumes_lists_skipped_rows_and_writes_the_tables(tmp_path, monkeypatch):
    """experiments/disentangle_table.py without training (seconds): a finished (attribute, row) in rows.jsonl with the
    same settings is not run again, a row whose options are not on main is listed as skipped, and the tables are
    written from rows.jsonl (the end-to-end run on tiny settings is tests/e2e/test_scripts.py)."""
    import json

    mod = _script("disentangle_table")
    out = tmp_path / "table"
    out.mkdir()
    rows = {"0": {"0.5": (0.2, 0.9), "1.0": (0.6, 0.75)}}
    summary = {"strengths": [0.5, 1.0], "seeds": {"0": {"train_seconds": 3.0, "rows": []}}}
    for split in ("select", "test"):
        for st, (succ, pres) in rows["0"].items():
            summary["seeds"]["0"]["rows"].append(
                {"split": split, "strength": float(st), "edit/n": 2.0, "edit/success": succ, "edit/preserved": pres}
            )
    (out / "summary.json").write_text(json.dumps(summary))
    settings = {"edit_overrides": [], "seeds": [0], "strengths": [0.5, 1.0], "extra": []}
    done = {"attribute": "glasses", "row": "paper", "supervision": "CLIP text only", "overrides": [], **settings}
    done.update(summary=str(out / "summary.json"), chosen_strength=1.0, test={"0": {"success": 0.6, "preserved": 0.75}})
    done.update(true={"0": {"psnr": 21.5}}, train_seconds={"0": 3.0}, load_average=[1, 1, 1], passes=[79, 88])
    (out / "rows.jsonl").write_text(json.dumps(done) + "\n")
    ran = []
    monkeypatch.setattr(mod, "python", lambda args, *_: ran.append(args) or False)
    argv = [
        "--out",
        str(out),
        "--data",
        str(tmp_path / "data"),
        "--attributes",
        "glasses",
        "--seeds",
        "0",
        "--n-faces",
        "2",
    ]
    argv += ["--n-train", "2"]
    mod.main([*argv, "--rows", "paper", "loco", "--strengths", "0.5", "1.0", "--reverse", "--no-compose"])
    assert ran == []  # the finished row was found, loco was skipped before any work
    md = (out / "table.md").read_text()
    assert "| glasses | paper | CLIP text only | 1 | s0: 0.60 / 0.75 | all 1.00 | 21.5 / - | 3 (1.0) | 79 / 88 |" in md
    assert "- row loco skipped: " in md  # LOCO is run by experiments/loco.py, not as a recipe
    assert (out / "table.csv").read_text().startswith("attribute,row,seed,strength,success,preserved,psnr")
    # other settings (here: strengths) are not the finished row: it runs again (the fake run fails, nothing is added)
    mod.main([*argv, "--rows", "paper", "--strengths", "0.5", "--reverse", "--no-compose"])
    assert len(ran) == 1 and ran[0][0] == "experiments/recipes.py" and "--strengths" in ran[0]
    assert len((out / "rows.jsonl").read_text().splitlines()) == 1
