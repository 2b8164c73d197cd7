"""asyrp.grid: every grid the project writes has readable cells (>= 128 px, nearest upscaling) and labels."""

import numpy as np
import pytest
import torch
from helpers import images
from PIL import Image

from asyrp.grid import MIN_CELL, columns_grid, grid_layout, save_grid, strength_label, table_grid, upscale_factor


@pytest.mark.parametrize("size,factor", [(16, 8), (32, 4), (100, 2), (128, 1), (256, 1)])
def test_upscale_factor_reaches_min_cell(size, factor):
    assert upscale_factor(size) == factor and size * factor >= MIN_CELL


def _find(canvas: np.ndarray, cell: np.ndarray) -> tuple[int, int]:
    """Top-left corner of ``cell`` inside ``canvas`` (exact match), searching every position."""
    h, w = cell.shape[:2]
    H, W = canvas.shape[:2]
    for y in range(H - h + 1):
        rows = np.nonzero((canvas[y, : W - w + 1] == cell[0, 0]).all(-1))[0]
        for x in rows:
            if np.array_equal(canvas[y : y + h, x : x + w], cell):
                return y, x
    raise AssertionError("cell not found")


def test_cells_are_nearest_upscaled_in_labelled_columns(tmp_path):
    x0, x1 = images(3, size=32, seed=1), images(3, size=32, seed=2)
    im = columns_grid([("input", x0), ("smiling x0.9", x1)], ["a.png", "b.png", "c.png"], title="what the numbers are")
    path = save_grid(tmp_path / "g.png", im)
    lay = grid_layout(path)
    assert (lay["rows"], lay["columns"], lay["cell"], lay["upscale"]) == (3, 2, [128, 128], 4)
    assert lay["column_labels"] == ["input", "smiling x0.9"] and lay["row_labels"] == ["a.png", "b.png", "c.png"]
    canvas = np.asarray(Image.open(path).convert("RGB"))
    # every image is in the grid, upscaled 4x by repeating pixels; row r of column 1 sits right of row r of column 0
    corners = {}
    for c, x in enumerate((x0, x1)):
        for r in range(3):
            small = ((x[r].clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
            corners[r, c] = _find(canvas, small.repeat(4, 0).repeat(4, 1))
    for r in range(3):
        assert corners[r, 0][0] == corners[r, 1][0] and corners[r, 1][1] > corners[r, 0][1] + 127
        if r:
            assert corners[r, 0][0] >= corners[r - 1, 0][0] + 128
    # the labels are drawn: ink above the first row (title and column labels) and left of the first column
    top, left = corners[0, 0]
    assert (canvas[:top, left:] < 100).any() and (canvas[top : top + 128, :left] < 100).any()


def test_blocks_put_rows_side_by_side():
    x = images(8, size=16)
    one = columns_grid([("input", x), ("edit", -x)])
    four = columns_grid([("input", x), ("edit", -x)], blocks=4)
    assert four.height < one.height / 3 and four.width > one.width * 3
    assert table_grid([[x[0], None], [x[1], x[2]]]).size[0] > 2 * 128


def test_strength_label_names_attribute_and_strength():
    assert strength_label(["smiling"], [0.9]) == "smiling x0.9"
    assert strength_label(["smiling", "young"], [1.0, 0.5]) == "smiling x1 + young x0.5"
    assert strength_label(["smiling", "young"], [0.0, 0.0]) == "reconstruction (x0)"
