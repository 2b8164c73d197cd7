"""The markdown tables of docs/results.md "Directions without CLIP": the comparison from compare_directions.py's JSON
files, and the oracle's labels of the directions of discover.py run folders.

    python experiments/directions_table.py outputs/cmp/results/smiling.json outputs/cmp/results/glasses.json ...
    python experiments/directions_table.py outputs/cmp/discover/pca_smiling outputs/cmp/discover/jacobian_smiling
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

NAMES = {
    "asyrp_implicit": "Asyrp implicit f(h, t)",
    "asyrp_global": "Asyrp global delta_h",
    "mean_diff": "mean difference",
    "boundary": "boundary normal",
    "pca": "PCA (best-matching)",
    "jacobian": "Jacobian (best-matching)",
}


def cost_cell(c: dict) -> str:
    secs = f"{c['seconds']:.0f} s" if "seconds" in c else "?"
    extra = f" + {c['jvp_rows']} JVP / {c['vjp_rows']} VJP rows" if "jvp_rows" in c else ""
    approx = "~" if "passes_by" in c else ""
    return f"{secs}, {approx}{c['passes']:.0f} passes{extra}"


def rows(result: dict) -> list[str]:
    attr = result["attribute"].replace("synthfaces_", "")
    out = []
    for r in result["rows"]:
        what = NAMES.get(r["row"], r["row"])
        if r["row"].startswith("asyrp"):
            what += ", recipe strength" if r.get("selection") == "recipe" else ", strength chosen on selection faces"
        if r.get("direction") and r["row"] in ("pca", "jacobian"):
            what += f": {r['direction']} (labelled {r['label']})"
        out.append(
            f"| {attr} | {what} | {r['strength']:g} | {r['success']:.3f} | {r['preserved']:.3f} | "
            f"{r['psnr_to_recon']:.1f} | {cost_cell(r['cost'])} | {r['seconds_per_edit']:.2f} s, "
            f"{r['passes_per_edit']:.0f} |"
        )
    return out


def label_rows(run: Path) -> list[str]:
    d = json.loads((run / "directions.json").read_text())
    iv = f"[{d['edit']['t0']}, {d['edit']['t_edit']}]"
    return [
        f"| {run.name} | {iv} | {r['name']} | {r['label']} | {r.get('others_moved', '')} | "
        f"{r.get('disentanglement', float('nan')):.2f} |"
        for r in d["directions"]
    ]


def main(paths: list[str]) -> None:
    runs = [Path(p) for p in paths if Path(p).is_dir()]
    if runs:
        print(
            "| run | interval | direction | oracle label (head that flips most, sign) | other heads moved | "
            "disentanglement |"
        )
        print("|---|---|---|---|---|---|")
        for run in runs:
            for line in label_rows(run):
                print(line)
        return
    print(
        "| attribute | direction | strength | success | preserved | PSNR to recon. (dB) | to obtain: time, passes "
        "| per edit: time, passes |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for p in paths:
        for line in rows(json.loads(Path(p).read_text())):
            print(line)


if __name__ == "__main__":
    main(sys.argv[1:])
