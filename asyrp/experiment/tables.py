"""What an experiment writes: a markdown table with the run's settings and command (plus its CSV), plots and
labelled image grids."""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from .options import rel

if TYPE_CHECKING:
    from .shared import Experiment


def fmt(v: Any) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "n/a"
        if math.isinf(v):
            return "inf"
        return f"{v:.4g}"
    return str(v)


def write_table(
    exp: Experiment,
    name: str,
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    *,
    title: str,
    notes: Sequence[str] = (),
) -> Path:
    """<out>/<name>.md (a markdown table with the run's settings) and <out>/<name>.csv."""
    md = exp.out / f"{name}.md"
    lines = [f"# {title}", "", "| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        lines.append("| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |")
    lines += ["", "Settings: " + ", ".join(f"{k}={v}" for k, v in exp.describe().items())]
    lines += ["", "Command: `python " + " ".join([rel(sys.argv[0])] + sys.argv[1:]) + "`"]
    for n in list(notes) + exp.notes:
        lines.append(f"- {n}")
    md.write_text("\n".join(lines) + "\n")
    with open(exp.out / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(columns)
        for r in rows:
            w.writerow([r.get(c, "") for c in columns])
    print("\n".join(lines[: len(rows) + 4]))
    print(f"wrote {md}")
    return md


def read_table(path: Path) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the first markdown table of a file (tests)."""
    rows: list[str] = []
    for line in Path(path).read_text().splitlines():
        if line.startswith("|"):
            rows.append(line)
        elif rows:
            break
    cells = [[c.strip() for c in r.strip("|").split("|")] for r in rows]
    return cells[0], cells[2:]


def plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    from matplotlib import pyplot

    return pyplot


def save_grid(
    path: Path, columns: Sequence[torch.Tensor], labels: Sequence[str], n: int = 8, title: str | None = None
) -> Path:
    """Kinds of images (each (B, 3, H, W) in [-1, 1]) as labelled columns, the first n images as rows
    (asyrp.grid: upscaled to readable cells)."""
    from ..grid import columns_grid
    from ..grid import save_grid as write

    cols = [(str(lab), x[:n].detach().cpu().float()) for lab, x in zip(labels, columns, strict=True)]
    return write(path, columns_grid(cols, [f"image {i}" for i in range(min(n, columns[0].shape[0]))], title))
