"""Rows of a side-by-side comparison of editing methods from experiments/recipes.py summaries (summary.json: per
training seed, one scored row per split and strength): the target-vs-kept matrix at the chosen strength, and the kept
rates of several methods at matched success.

Matched success: one common target success, by default the highest that every compared method reaches on select/
(each method's best mean over seeds, the least of those); each method's strength is the one whose select/ success
(mean over seeds) is closest to it, and test/ at that strength is reported. A margin is counted in faces: the
difference of kept faces on test/ against a reference method at the same training seed, the smallest over seeds.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import mean
from typing import Any

PREFIX = "edit/"


def scored(summary: Mapping[str, Any], seed: str, split: str, strength: float, key: str = "rows") -> dict:
    """The scored row of one training seed, split and strength."""
    rows = summary["seeds"][seed][key]
    for r in rows:
        if r["split"] == split and float(r["strength"]) == float(strength):
            return r
    raise KeyError(f"no {split} row at strength {strength} for seed {seed}")


def matrix(row: Mapping[str, Any]) -> dict[str, float]:
    """Target success, preserved (every other head kept) and the kept rate of every other head, of one scored row."""
    out = {"success": row[PREFIX + "success"], "preserved": row[PREFIX + "preserved"]}
    out.update(
        {k.removeprefix(PREFIX + "preserved/"): v for k, v in row.items() if k.startswith(PREFIX + "preserved/")}
    )
    return out


def strengths_of(summary: Mapping[str, Any], key: str = "rows") -> list[float]:
    """The strengths a summary edited at (select/ rows of its first seed, in order)."""
    first = next(iter(summary["seeds"].values()))[key]
    return [float(r["strength"]) for r in first if r["split"] == "select"]


def select_success(summary: Mapping[str, Any], key: str = "rows") -> dict[float, float]:
    """{strength: select/ success, mean over the training seeds}."""
    return {
        s: mean(scored(summary, seed, "select", s, key)[PREFIX + "success"] for seed in summary["seeds"])
        for s in strengths_of(summary, key)
    }


def common_target(summaries: Mapping[str, Mapping[str, Any]], key: str = "rows") -> float:
    """The highest select/ success every method reaches (the least of their best mean success)."""
    return min(max(select_success(s, key).values()) for s in summaries.values())


def matched(
    summaries: Mapping[str, Mapping[str, Any]],
    target: float | None = None,
    reference: str | None = None,
    key: str = "rows",
) -> dict[str, dict]:
    """Per method: the strength whose select/ success is closest to ``target`` (ties: the larger select/ preserved,
    then the smaller strength), its test/ matrix per seed and, against ``reference`` (default: the first method), the
    margin in kept test/ faces at every seed and the smallest of them."""
    target = common_target(summaries, key) if target is None else float(target)
    reference = reference or next(iter(summaries))
    out = {}
    for name, s in summaries.items():
        sel = select_success(s, key)
        kept = {st: mean(scored(s, seed, "select", st, key)[PREFIX + "preserved"] for seed in s["seeds"]) for st in sel}
        best = min(sel, key=lambda st: (round(abs(sel[st] - target), 9), -kept[st], st))
        test = {seed: scored(s, seed, "test", best, key) for seed in s["seeds"]}
        out[name] = {
            "target": target,
            "strength": best,
            "select_success": sel[best],
            "test": {seed: matrix(r) for seed, r in test.items()},
            "n": {seed: int(r[PREFIX + "n"]) for seed, r in test.items()},
        }
    ref = out[reference]
    for o in out.values():
        common = [seed for seed in o["test"] if seed in ref["test"]]
        o["margin_faces"] = {
            seed: round((o["test"][seed]["preserved"] - ref["test"][seed]["preserved"]) * o["n"][seed])
            for seed in common
        }
        o["min_margin_faces"] = min(o["margin_faces"].values()) if common else None
        o["reference"] = reference
    return out


def kept_line(m: Mapping[str, float], skip: Sequence[str] = ("success", "preserved")) -> str:
    """'head 0.95, ...' for the heads kept on fewer than every face ('all 1.00' when none)."""
    low = [f"{k} {v:.2f}" for k, v in m.items() if k not in skip and v < 1]
    return ", ".join(low) or "all 1.00"


# -- the tables (experiments/disentangle_table.py) ------------------------------------------------------------
def latest(rows: list[dict]) -> list[dict]:
    """The last line of each (attribute, row): a rerun with other settings supersedes the earlier one."""
    return list({(r["attribute"], r["row"]): r for r in rows}.values())


def seeds_cell(test: dict, key_s: str = "success", key_p: str = "preserved") -> str:
    return "<br>".join(f"s{seed}: {m[key_s]:.2f} / {m[key_p]:.2f}" for seed, m in test.items())


def mean_heads(test: dict) -> dict:
    heads = [h for h in next(iter(test.values())) if h not in ("success", "preserved")]
    return {h: sum(m[h] for m in test.values()) / len(test) for h in heads}


def main_table(rows: list[dict]) -> list[str]:
    head = [
        "attribute",
        "row",
        "supervision",
        "strength (select/)",
        "test/ success / preserved per seed",
        "kept per other head (mean over seeds)",
        "dB / LPIPS to true render (mean)",
        "train s per seed (load)",
        "passes per edited image (enc / dec)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if r["row"].startswith("compose:"):
            continue
        true = list(r["true"].values())
        db = sum(t["psnr"] for t in true) / len(true)
        lp = f"{sum(t['lpips'] for t in true) / len(true):.3f}" if "lpips" in true[0] else "-"
        secs = " / ".join(f"{v:.0f}" for v in r["train_seconds"].values()) + f" ({r['load_average'][-1]:.1f})"
        cells = [
            r["attribute"],
            r["row"],
            r["supervision"],
            f"{r['chosen_strength']:g}",
            seeds_cell(r["test"]),
            kept_line(mean_heads(r["test"])),
            f"{db:.1f} / {lp}",
            secs,
            "{} / {}".format(*r["passes"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def matched_table(rows: list[dict], target: float | None = None) -> tuple[list[str], list[dict]]:
    """Per attribute with two or more rows: every row at the strength matched to a common select/ success."""
    head = [
        "attribute",
        "row",
        "target success (select/)",
        "strength",
        "test/ success / preserved per seed",
        "kept test/ faces vs the reference per seed (min)",
    ]
    lines, flat = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)], []
    for attr in dict.fromkeys(r["attribute"] for r in rows):
        mine = {r["row"]: json.loads(Path(r["summary"]).read_text()) for r in rows if r["attribute"] == attr}
        if len(mine) < 2:
            continue
        ref = "paper" if "paper" in mine else None
        for name, m in matched(mine, target, ref).items():
            margins = ", ".join(f"{v:+d}" for v in m["margin_faces"].values())
            cells = [
                attr,
                name,
                f"{m['target']:.2f}",
                f"{m['strength']:g}",
                seeds_cell(m["test"]),
                f"vs {m['reference']}: {margins} ({m['min_margin_faces']:+d} of {min(m['n'].values())})",
            ]
            lines.append("| " + " | ".join(cells) + " |")
            flat.append({"attribute": attr, "row": name, **{k: v for k, v in m.items() if k != "test"}})
    return lines, flat


def reverse_table(rows: list[dict]) -> list[str]:
    """The rows edited backwards (faces that have the attribute, negative strengths), with the distance to the true
    render of the removal where the renderer has one."""
    lines = [
        "| attribute | row | target | strength | test/ success / preserved per seed | dB to true render (mean) |",
        "|---|---|---|---|---|---|",
    ]
    for r in (r for r in rows if r.get("reverse")):
        rev, true = r["reverse"], list(r["reverse"].get("true", {}).values())
        db = f"{sum(t['psnr'] for t in true) / len(true):.1f}" if true else "-"
        cells = [r["attribute"], r["row"], rev["target"], f"{rev['chosen_strength']:g}", seeds_cell(rev["test"]), db]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def composition_table(rows: list[dict]) -> list[str]:
    """Composed attributes per seed: all succeed, every other head kept, both (and the PSNR to the true render)."""
    lines = [
        "| attributes | row | coefficients | per seed: all succeed / all others kept / both (dB to true render) |",
        "|---|---|---|---|",
    ]
    for r in (r for r in rows if r["row"].startswith("compose:")):
        per = [(s, r[str(s)]) for s in r["seeds"]]
        db = {s: f" ({v['psnr']:.1f})" if "psnr" in v else "" for s, v in per}
        cell = "<br>".join(f"s{s}: {v['all']:.2f} / {v['kept']:.2f} / {v['both']:.2f}{db[s]}" for s, v in per)
        lines.append(f"| {r['attribute']} | {r['row']} | {r['coeffs']} | {cell} |")
    return lines


def write_tables(out: Path, rows: list[dict], notes: Sequence[str] = (), target: float | None = None) -> None:
    """<out>/table.md (main, matched, reverse and composition tables, the skipped rows) and <out>/table.csv (one line
    per attribute, row and seed: the whole target-vs-kept matrix)."""
    md = ["## Target vs kept (test/, strength chosen on select/)", "", *main_table(rows), ""]
    matched_lines, _ = matched_table([r for r in rows if not r["row"].startswith("compose:")], target)
    md += ["## Matched success", "", *matched_lines, ""]
    md += ["## Reverse edits", "", *reverse_table(rows)]
    md += ["", "## Composition", "", *composition_table(rows)]
    md += ["", *[f"- {n}" for n in notes]]
    (out / "table.md").write_text("\n".join(md) + "\n")
    flat = [
        {
            "attribute": r["attribute"],
            "row": r["row"],
            "seed": seed,
            "strength": r["chosen_strength"],
            **m,
            **r["true"][seed],
            "train_seconds": r["train_seconds"].get(seed),
            "passes_enc": r["passes"][0],
            "passes_dec": r["passes"][1],
        }
        for r in rows
        if "test" in r
        for seed, m in r["test"].items()
    ]
    with open(out / "table.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, list(dict.fromkeys(k for f in flat for k in f)), restval="")
        w.writeheader()
        w.writerows(flat)
