"""The side-by-side table's arithmetic on hand-made rows (asyrp.experiment.comparison, composed_score): the matrix of
a scored row, the strength matched to a common select/ success, the margin in faces, and a composition's verdict."""

from __future__ import annotations

import json

import pytest
import torch

from asyrp.experiment import comparison as cmp
from asyrp.metrics import composed_score


def row(split, strength, success, preserved, n=64, **heads):
    return {
        "split": split,
        "strength": strength,
        "edit/n": float(n),
        "edit/success": success,
        "edit/preserved": preserved,
        **{f"edit/preserved/{h}": v for h, v in heads.items()},
    }


def summary(select: dict, test: dict) -> dict:
    """One recipes.py summary: {seed: {strength: (success, preserved)}} on select/ and on test/."""
    seeds = {}
    for seed in select:
        rows = [row("select", s, *v, mouth=1.0) for s, v in select[seed].items()]
        rows += [row("test", s, *v, mouth=v[1]) for s, v in test[seed].items()]
        seeds[seed] = {"train_seconds": 1.0, "rows": rows}
    return {"seeds": seeds, "strengths": list(select["0"])}


def test_matrix_is_target_success_and_each_kept_head():
    m = cmp.matrix(row("test", 1.0, 0.5, 0.25, mouth=0.75, skin=1.0))
    assert m == {"success": 0.5, "preserved": 0.25, "mouth": 0.75, "skin": 1.0}
    assert cmp.kept_line(m) == "mouth 0.75"
    assert cmp.kept_line({"success": 0.1, "preserved": 1.0, "skin": 1.0}) == "all 1.00"


def test_matched_strength_and_margin_in_faces():
    # paper reaches at most 0.60 on select/ (mean over seeds); the other row reaches 0.90
    paper = summary(
        {"0": {0.5: (0.2, 0.9), 1.0: (0.6, 0.5)}, "1": {0.5: (0.2, 0.9), 1.0: (0.6, 0.5)}},
        {"0": {0.5: (0.25, 0.9), 1.0: (0.5, 0.5)}, "1": {0.5: (0.3, 0.8), 1.0: (0.7, 0.625)}},
    )
    other = summary(
        {"0": {0.5: (0.55, 0.95), 1.0: (0.9, 0.7)}, "1": {0.5: (0.65, 0.85), 1.0: (0.9, 0.7)}},
        {"0": {0.5: (0.5, 0.75), 1.0: (0.9, 0.7)}, "1": {0.5: (0.7, 0.75), 1.0: (0.9, 0.7)}},
    )
    assert cmp.common_target({"paper": paper, "other": other}) == pytest.approx(0.6)
    res = cmp.matched({"paper": paper, "other": other})
    assert res["paper"]["strength"] == 1.0 and res["other"]["strength"] == 0.5  # select/ means 0.60 and 0.60
    assert res["other"]["test"]["1"] == {"success": 0.7, "preserved": 0.75, "mouth": 0.75}
    # kept faces of 64 on test/ against paper at the same seed: (0.75 - 0.5) * 64 = 16, (0.75 - 0.625) * 64 = 8
    assert res["other"]["margin_faces"] == {"0": 16, "1": 8} and res["other"]["min_margin_faces"] == 8
    assert res["paper"]["min_margin_faces"] == 0 and res["other"]["reference"] == "paper"
    # a given target: the strength closest to it; ties go to the larger select/ preserved
    assert cmp.matched({"paper": paper, "other": other}, target=0.9)["other"]["strength"] == 1.0
    tie = cmp.matched({"other": other}, target=0.75)["other"]
    assert tie["strength"] == 0.5  # 0.60 and 0.90 are both 0.15 away: select/ preserved 0.90 beats 0.70


def test_tables_from_hand_made_rows(tmp_path):
    paper = summary({"0": {1.0: (0.6, 0.5)}}, {"0": {1.0: (0.5, 0.5)}})
    other = summary({"0": {1.0: (0.7, 0.9)}}, {"0": {1.0: (0.75, 0.75)}})
    rows = []
    for name, s in (("paper", paper), ("other", other)):
        (tmp_path / f"{name}.json").write_text(json.dumps(s))
        test = {"0": cmp.matrix(s["seeds"]["0"]["rows"][1])}
        rows.append(
            {
                "attribute": "glasses",
                "row": name,
                "supervision": "CLIP text only",
                "summary": str(tmp_path / f"{name}.json"),
                "chosen_strength": 1.0,
                "test": test,
                "true": {"0": {"psnr": 20.0}},
                "train_seconds": {"0": 12.0},
                "load_average": [1.0, 2.0, 3.0],
                "passes": [79, 88],
            }
        )
    comp = {"attribute": "a+b+c", "row": "compose:paper", "coeffs": [1, 1, 1], "seeds": [0]}
    comp["0"] = {"all": 0.5, "kept": 0.25, "both": 0.125}
    cmp.write_tables(tmp_path, cmp.latest([*rows, comp]), ["row x skipped: needs y"])
    md = (tmp_path / "table.md").read_text()
    assert (
        "| glasses | other | CLIP text only | 1 | s0: 0.75 / 0.75 | mouth 0.75 | 20.0 / - | 12 (3.0) | 79 / 88 |" in md
    )
    assert "vs paper: +16 (+16 of 64)" in md  # (0.75 - 0.5) * 64 faces
    assert "| a+b+c | compose:paper | [1, 1, 1] | s0: 0.50 / 0.25 / 0.12 |" in md and "- row x skipped" in md
    csv = (tmp_path / "table.csv").read_text().splitlines()
    assert csv[0].split(",")[:8] == ["attribute", "row", "seed", "strength", "success", "preserved", "mouth", "psnr"]
    assert len(csv) == 3


def test_composed_score_drops_every_composed_head_from_the_kept_ones():
    ref = {
        "mouth": torch.tensor([0, 0, 1, 1]),
        "glasses": torch.tensor([0, 0, 0, 0]),
        "skin": torch.tensor([2, 2, 2, 2]),
    }
    out = {
        "mouth": torch.tensor([2, 2, 2, 1]),
        "glasses": torch.tensor([1, 1, 0, 1]),
        "skin": torch.tensor([2, 1, 2, 2]),
    }
    ref["confidence"], out["confidence"] = torch.rand(4), torch.rand(4)  # a judge output that is no head
    r = composed_score(ref, out, [("mouth", 2), ("glasses", 1)], ["mouth", "glasses", "skin"])
    assert r["all"] == 0.5  # images 0 and 1 have both targets
    assert r["kept"] == 0.75 and set(k for k in r if k.startswith("preserved/")) == {"preserved/skin"}
    assert r["both"] == 0.25 and r["success/mouth=2"] == 0.75 and r["success/glasses=1"] == 0.75 and r["n"] == 4
