"""The true edit of a synthfaces face: the same face drawn with an attribute switched on (or off). The renderer knows
every face's parameters, so the edit a method should make is known exactly; the ceiling, the CLIP alignment check and
the side-by-side table compare against it.
"""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np
import torch

from .oracle import to_tensor
from .render import SPLIT_SEEDS, Face, render, sample_face

# attribute (conf/attribute/synthfaces_<name>.yaml) -> (the face field the renderer switches, the value that is "on")
ATTRIBUTES = {
    "smiling": ("mouth", "smiling"),
    "frowning": ("mouth", "frowning"),
    "glasses": ("glasses", True),
    "hat": ("hat", True),
    "blond_hair": ("hair_colour", "blond"),
    "red_hair": ("hair_colour", "red"),
}
# the value a removed attribute takes (a reverse edit's true render); hair colours have no single "off" value
REMOVED = {"smiling": "neutral", "frowning": "neutral", "glasses": False, "hat": False}


def lacks(face: Face, attr: str) -> bool:
    """Whether an edit adding ``attr`` can change this face (it does not have it yet)."""
    field, value = ATTRIBUTES[attr]
    return getattr(face, field) != value


def switched(face: Face, attrs: list[str] | tuple[str, ...], on: bool = True) -> Face:
    """The face with every attribute of ``attrs`` switched on (or off: its REMOVED value)."""
    change = {}
    for attr in attrs:
        if not on and attr not in REMOVED:
            raise ValueError(f"no true removal of {attr!r}: {ATTRIBUTES[attr][0]} has no single 'off' value")
        change[ATTRIBUTES[attr][0]] = ATTRIBUTES[attr][1] if on else REMOVED[attr]
    return face.replace(**change)


def draw(faces: list[Face], size: int = 32) -> torch.Tensor:
    """The faces' renders as a (N, 3, size, size) tensor in [-1, 1]."""
    return to_tensor(np.stack([np.asarray(render(f, size)) for f in faces]))


def face_pairs(attr: str, split: str, n: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """(sources, true edits): the first n faces of the split (its dataset seed) without the attribute, and the same
    faces rendered with it."""
    faces, i = [], 0
    while len(faces) < n:
        f = sample_face(SPLIT_SEEDS[split], i)
        i += 1
        if lacks(f, attr):
            faces.append(f)
    return draw(faces, size), draw([switched(f, [attr]) for f in faces], size)


def read_faces(paths: list[str | Path]) -> list[Face]:
    """The parameters of written faces, from the attributes.json beside them (python -m asyrp.synthfaces.data)."""
    names = {f.name for f in fields(Face)}
    tables: dict[Path, dict] = {}
    out = []
    for p in map(Path, paths):
        if p.parent not in tables:
            meta = p.parent / "attributes.json"
            if not meta.is_file():
                raise FileNotFoundError(f"{meta}: no face parameters (write the folder with asyrp.synthfaces.data)")
            tables[p.parent] = json.loads(meta.read_text())
        if p.name not in tables[p.parent]:
            raise KeyError(f"{p.name} is not in {p.parent / 'attributes.json'}")
        out.append(Face(**{k: v for k, v in tables[p.parent][p.name].items() if k in names}))
    return out


def true_edits(paths: list[str | Path], attrs: list[str] | tuple[str, ...], on: bool = True, size: int = 32):
    """The true edits of written faces: each drawn again with ``attrs`` switched on (or off)."""
    return draw([switched(f, attrs, on) for f in read_faces(paths)], size)
