"""asyrp.synthfaces.edits: the true edit of a face is the same face drawn with only the attribute's field switched."""

from __future__ import annotations

import pytest
import torch

from asyrp.synthfaces.data import write_split
from asyrp.synthfaces.edits import ATTRIBUTES, face_pairs, lacks, read_faces, switched, true_edits
from asyrp.synthfaces.render import SPLIT_SEEDS, sample_face


def test_switched_changes_only_the_fields_named():
    f = sample_face(2, 0).replace(mouth="neutral", glasses=False, hair_colour="black")
    g = switched(f, ["smiling", "glasses", "blond_hair"])
    assert (g.mouth, g.glasses, g.hair_colour) == ("smiling", True, "blond")
    assert g.replace(mouth="neutral", glasses=False, hair_colour="black") == f
    assert switched(switched(f, ["glasses"]), ["glasses"], on=False) == f
    with pytest.raises(ValueError, match="no true removal"):
        switched(f, ["red_hair"], on=False)


def test_face_pairs_are_the_split_faces_without_the_attribute(tmp_path):
    src, true = face_pairs("glasses", "test", 3)
    assert src.shape == true.shape == (3, 3, 32, 32) and not torch.equal(src, true)
    # the data writer's test/ without glasses holds the same faces: their parameters give the same true edits
    folder = write_split(tmp_path / "test", SPLIT_SEEDS["test"], 3, {"glasses": "True"})
    files = sorted(folder.glob("*.png"))
    assert all(lacks(f, "glasses") for f in read_faces(files))
    assert torch.equal(true_edits(files, ["glasses"]), true)
    assert set(ATTRIBUTES) == {"smiling", "frowning", "glasses", "hat", "blond_hair", "red_hair"}
