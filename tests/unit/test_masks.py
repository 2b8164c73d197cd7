"""The region-mask file format (asyrp.masks): what is written is read back unchanged, weights-only; each bad mask
is one AsyrpUserError naming the fault."""

import pytest
import torch

from asyrp.masks import MASK_KEYS, check_mask, read_mask, save_mask
from asyrp.ops.errors import AsyrpUserError


def _box(size=8):
    m = torch.zeros(size, size)
    m[2:5, 1:6] = 1.0
    return m


def test_round_trip_is_weights_only(tmp_path):
    m = _box() * 0.5
    path = save_mask(m, tmp_path / "mask.pt", source="test box", attribute="glasses")
    raw = torch.load(path, weights_only=True)
    assert set(MASK_KEYS) <= set(raw)
    got = read_mask(path, image_size=8)
    assert torch.equal(got["mask"], m)
    assert (got["image_size"], got["source"], got["attribute"]) == (8, "test box", "glasses")


@pytest.mark.parametrize(
    "mask, size, words",
    [
        (_box(8), 16, "8x8 but the images are 16x16"),
        (torch.zeros(8, 8), None, "empty"),
        (torch.ones(8, 8), None, "every pixel"),
        (_box(8) * 2, None, "outside [0, 1]"),
        (torch.zeros(3, 8, 8), None, "shape (3, 8, 8)"),
    ],
)
def test_bad_masks_are_one_error(mask, size, words):
    with pytest.raises(AsyrpUserError, match=words.replace("(", r"\(").replace(")", r"\)").replace("[", r"\[")):
        check_mask(mask, size)


def test_bad_files_are_one_error(tmp_path):
    with pytest.raises(AsyrpUserError, match="does not exist"):
        read_mask(tmp_path / "none.pt")
    torch.save({"mask": _box()}, tmp_path / "partial.pt")
    with pytest.raises(AsyrpUserError, match="lacks image_size, source, attribute"):
        read_mask(tmp_path / "partial.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    with pytest.raises(AsyrpUserError, match="not a readable tensor file"):
        read_mask(tmp_path / "junk.pt")
    save_mask(_box(), tmp_path / "m.pt", source="s", attribute="a")
    with pytest.raises(AsyrpUserError, match="images are 32x32"):
        read_mask(tmp_path / "m.pt", image_size=32)
