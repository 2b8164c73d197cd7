"""Image grids a person can read: every grid the project writes (edit.py, training callbacks, make demo, experiments,
the editor app) is drawn here.

Small images are upscaled with nearest-neighbour sampling by an integer factor until a cell is at least ``MIN_CELL``
pixels (32 px synthfaces faces become 128 px cells; 256 px images stay as they are); columns and rows carry labels
(input, reconstruction, the edit with its attribute and strength, the image's name) and an optional title says what
the numbers are. Labels use Pillow's built-in default font: nothing is downloaded or installed.

- ``columns_grid(columns, row_labels, title)``: one column per kind of image (``[("input", x0), ("edit", x)]``),
  one row per image; ``blocks`` lays long lists out as side-by-side panels.
- ``table_grid(cells, ...)``: any 2-D table of images (rows of (C, H, W) tensors).
- ``save_grid(path, image)``: written atomically; ``grid_layout(path)`` reads back what it shows.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

MIN_CELL = 128
PAD = 4
FONT_SIZE = 13
WHITE, INK = (255, 255, 255), (20, 20, 20)
LAYOUT_KEY = "asyrp.grid"  # PNG text chunk: the grid's layout and labels, as JSON

__all__ = [
    "MIN_CELL",
    "to_pil",
    "columns_grid",
    "table_grid",
    "save_grid",
    "grid_layout",
    "upscale_factor",
    "strength_label",
]


def strength_label(names: Sequence[str], coeffs: Sequence[float]) -> str:
    """'smiling x0.9' / 'smiling x0.9 + young x0.5': what an edit column shows (attribute and strength)."""
    parts = [f"{n} x{float(c):g}" for n, c in zip(names, coeffs) if float(c) != 0.0 or len(names) == 1]
    return " + ".join(parts) if parts else "reconstruction (x0)"


def upscale_factor(size: int, min_cell: int = MIN_CELL) -> int:
    """The integer nearest-neighbour factor that brings a ``size``-pixel image to at least ``min_cell`` pixels."""
    return max(1, math.ceil(min_cell / max(int(size), 1)))


def _font(size: int = FONT_SIZE):
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)  # Pillow >= 10.1: its bundled font, scalable
    except TypeError:  # older Pillow: the fixed bitmap font
        return ImageFont.load_default()


def to_pil(x: torch.Tensor, factor: int = 1):
    """(C, H, W) in [-1, 1] -> an RGB image upscaled ``factor`` times (nearest)."""
    from PIL import Image

    x = x.detach().float().cpu().clamp(-1, 1)
    if x.shape[0] == 1:
        x = x.expand(3, -1, -1)
    arr = ((x[:3] + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    im = Image.fromarray(np.ascontiguousarray(arr), mode="RGB")
    return im.resize((im.width * factor, im.height * factor), Image.NEAREST) if factor > 1 else im


def _wrap(draw, text: str, font, width: int) -> list[str]:
    """Greedy word wrap to ``width`` pixels; a single word that is too long is cut with '..'."""
    lines: list[str] = []
    for para in str(text).split("\n"):
        cur = ""
        for word in para.split(" "):
            cand = f"{cur} {word}" if cur else word
            if draw.textlength(cand, font=font) <= width or not cur:
                cur = cand
            else:
                lines.append(cur)
                cur = word
        lines.append(cur)
    out = []
    for line in lines:
        while line and draw.textlength(line, font=font) > width and len(line) > 3:
            line = line[:-3] + ".."
        out.append(line)
    return out


def table_grid(
    cells: Sequence[Sequence[torch.Tensor | None]],
    col_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    min_cell: int = MIN_CELL,
    blocks: int = 1,
):
    """A PIL image of a table of images (``cells[r][c]``: (C, H, W) in [-1, 1], or None for an empty cell).

    ``blocks`` > 1 splits the rows into that many panels placed side by side (each with the column labels)."""
    from PIL import Image, ImageDraw

    rows = [list(r) for r in cells]
    first = next(x for r in rows for x in r if x is not None)
    h, w = int(first.shape[-2]), int(first.shape[-1])
    k = upscale_factor(min(h, w), min_cell)
    ch, cw = h * k, w * k
    n_cols = max(len(r) for r in rows)
    font = _font()
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    line_h = int(sum(font.getmetrics())) + 2 if hasattr(font, "getmetrics") else 13
    row_labels = [str(s) for s in row_labels] if row_labels else None
    label_w = 0
    if row_labels:
        label_w = min(max(int(probe.textlength(s, font=font)) for s in row_labels) + 2 * PAD, max(cw, 160))
    head = [_wrap(probe, s, font, cw) for s in col_labels] if col_labels else []
    head_h = (max(len(x) for x in head) * line_h + PAD) if head else 0
    blocks = max(1, min(int(blocks), len(rows)))
    per = math.ceil(len(rows) / blocks)
    panel_w = label_w + n_cols * (cw + PAD)
    width = blocks * panel_w + PAD + (blocks - 1) * 2 * PAD
    title_lines = _wrap(probe, title, font, width - 2 * PAD) if title else []
    title_h = len(title_lines) * line_h + (PAD if title_lines else 0)
    height = PAD + title_h + head_h + per * (ch + PAD)
    canvas = Image.new("RGB", (width, height), WHITE)
    draw = ImageDraw.Draw(canvas)
    for i, line in enumerate(title_lines):
        draw.text((PAD, PAD + i * line_h), line, fill=INK, font=font)
    y0 = PAD + title_h
    for b in range(blocks):
        x0 = PAD + b * (panel_w + 2 * PAD)
        for c, lines in enumerate(head):
            for i, line in enumerate(lines):
                tw = probe.textlength(line, font=font)
                draw.text((x0 + label_w + c * (cw + PAD) + (cw - tw) / 2, y0 + i * line_h), line, fill=INK, font=font)
        for r, row in enumerate(rows[b * per : (b + 1) * per]):
            y = y0 + head_h + r * (ch + PAD)
            if row_labels:
                label = _wrap(probe, row_labels[b * per + r], font, label_w - PAD)
                for i, line in enumerate(label[: max(ch // line_h, 1)]):
                    draw.text((x0, y + (ch - len(label) * line_h) / 2 + i * line_h), line, fill=INK, font=font)
            for c, x in enumerate(row):
                if x is not None:
                    canvas.paste(
                        to_pil(x, k) if x.shape[-1] * k == cw else to_pil(x, 1).resize((cw, ch)),
                        (x0 + label_w + c * (cw + PAD), y),
                    )
    canvas.info[LAYOUT_KEY] = json.dumps(
        {
            "rows": len(rows),
            "columns": n_cols,
            "cell": [ch, cw],
            "upscale": k,
            "blocks": blocks,
            "title": title,
            "column_labels": list(col_labels or []),
            "row_labels": list(row_labels or []),
        }
    )
    return canvas


def columns_grid(
    columns: Sequence[tuple[str, torch.Tensor]],
    row_labels: Sequence[str] | None = None,
    title: str | None = None,
    min_cell: int = MIN_CELL,
    blocks: int = 1,
):
    """One column per kind of image (label, (N, C, H, W)), one row per image: the usual before/after grid."""
    n = min(int(x.shape[0]) for _, x in columns)
    cells = [[x[i] for _, x in columns] for i in range(n)]
    labels = list(row_labels)[:n] if row_labels is not None else None
    return table_grid(cells, [s for s, _ in columns], labels, title, min_cell, blocks)


def save_grid(path: str | os.PathLike, image) -> Path:
    """Write a grid (a PIL image) as PNG, atomically, with its layout (``grid_layout``) in a text chunk."""
    from PIL.PngImagePlugin import PngInfo

    from .ops.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta = PngInfo()
    if LAYOUT_KEY in image.info:
        meta.add_text(LAYOUT_KEY, image.info[LAYOUT_KEY])
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=meta)
    return path


def grid_layout(path: str | os.PathLike) -> dict:
    """What a saved grid shows (rows, columns, cell size, labels, title), from its PNG text chunk."""
    from PIL import Image

    with Image.open(path) as im:
        return json.loads(im.text[LAYOUT_KEY])
