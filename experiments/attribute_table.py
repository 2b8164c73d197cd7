"""The six-attribute table of docs/results.md from experiments/recipes.py summaries (one folder per attribute).

    python experiments/attribute_table.py outputs/recipes/smiling outputs/recipes/glasses ...
    python experiments/attribute_table.py --sweep multirun/.../edit_quality.csv     # a sweep's trials (best strength)

One row per attribute: the recipe (t0 / t_edit / the strength chosen on select/), then per training seed the test/
numbers at that strength (success, preserved, CLIP direction, PSNR to the unedited reconstruction, training seconds),
whether 0.80 / 0.90 holds at every seed; the paper's interval rule (conf/plan/synthfaces.yaml) above it and
the command that reproduces each row below it. Reversed edits (recipes.py --reverse-data) get a row of their own.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from asyrp.config import compose

TARGETS = (0.80, 0.90)


def paper_interval() -> str:
    """The interval the paper's rule gives on this DDPM (the plan preset every synthfaces experiment starts from;
    measured by experiments/interval.py)."""
    rule = compose("train", ["plan=synthfaces"]).plan.interval
    return f"[999, {rule.t_edit}]"


def seed_cells(report: dict) -> tuple[list[str], bool]:
    cells, met = [], True
    for seed, r in sorted(report.items()):
        ok = r["edit/success"] >= TARGETS[0] and r["edit/preserved"] >= TARGETS[1]
        met &= ok
        cells.append(f"s{seed}: {r['edit/success']:.2f} / {r['edit/preserved']:.2f}{'' if ok else ' ✗'}")
    return cells, met


def row(folder: Path, reverse: bool = False) -> str:
    s = json.loads((folder / "summary.json").read_text())
    key, strength = (
        ("reverse_test_at_chosen", s["reverse_chosen_strength"])
        if reverse
        else ("test_at_chosen", s["chosen_strength"])
    )
    report = s[key]
    cells, met = seed_cells(report)
    mean = lambda k: sum(r[k] for r in report.values()) / len(report)  # noqa: E731
    secs = [s["seeds"][k]["train_seconds"] for k in sorted(report)]
    name = s["experiment"].removeprefix("synthfaces_") + (f", reversed ({s['reverse_target']})" if reverse else "")
    return (
        f"| {name} | [{s['t0']}, {s['t_edit']}] | {strength:g} | {'<br>'.join(cells)} | "
        f"{'**yes**' if met else 'no'} | {mean('edit/clip_direction'):.3f} | {mean('edit/psnr_rec'):.1f} | "
        f"{' / '.join(f'{x:.0f}' for x in secs)} |"
    )


def command(folder: Path) -> str:
    """The recipes.py command behind a row (its train overrides are the recipe as run)."""
    s = json.loads((folder / "summary.json").read_text())
    attr = s["experiment"].removeprefix("synthfaces_")
    rev = ""
    if "reverse_target" in s:
        rev = f" --reverse-data data/synthfaces_with_{attr} --reverse-target '{s['reverse_target']}'"
    strengths = " ".join(f"{x:g}" for x in s["strengths"])
    return (
        f"python experiments/recipes.py --experiment {s['experiment']} --data data/synthfaces_{attr} "
        f"--out outputs/recipes/{attr} --seeds 0 1 2 --strengths {strengths}{rev} -- "
        + " ".join(s.get("overrides") or [])
    )


def sweep_table(path: Path) -> None:
    """One line per trial of an edit_quality sweep, at the strength the trial kept, with the attribute kept least."""
    import csv

    with open(path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get("chosen", "True") == "True"]
    print(
        "| trial | t0 | t_edit | lr | w_recon | epochs | faces | CLIP ref. | strength | success | preserved | "
        "lowest kept | objective | train s |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        kept = {k.split("/", 2)[2]: float(v) for k, v in r.items() if k.startswith("edit/preserved/") and v}
        low = min(kept, key=kept.get) if kept else ""
        ref = next(
            (o.split("=", 1)[1] for o in r["overrides"].split() if o.startswith("model.loss.clip_reference=")), "x0"
        )
        print(
            f"| {r['trial']} | {r['t0']} | {r['t_edit']} | {float(r['lr']):.3f} | {float(r['w_recon']):.1f} | "
            f"{r['n_iter']} | {r.get('n_images', '')} | {ref} | {float(r['strength']):g} | "
            f"{float(r['edit/success']):.2f} | {float(r['edit/preserved']):.2f} | "
            f"{low} {kept.get(low, float('nan')):.2f} | {float(r['edit/objective']):.3f} | {r['train_seconds']} |"
        )


def main(argv: list[str]) -> None:
    if argv and argv[0] == "--sweep":
        for f in argv[1:]:
            sweep_table(Path(f))
        return
    print(
        f"Paper's interval rule (RMSE distance, conf/plan/synthfaces.yaml): {paper_interval()} for every attribute.\n"
    )
    print(
        "| attribute | interval [t0, t_edit] (sweep) | strength (select/) | test/ success / preserved per seed | "
        "0.80 / 0.90 at every seed | CLIP direction (mean) | PSNR to rec. dB (mean) | train s per seed |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for f in argv:
        folder = Path(f)
        print(row(folder))
        if "reverse_test_at_chosen" in json.loads((folder / "summary.json").read_text()):
            print(row(folder, reverse=True))
    print("\nCommands (one per row; the reversed rows come from the same command):\n")
    for f in argv:
        print("    " + command(Path(f)))


if __name__ == "__main__":
    main(sys.argv[1:])
