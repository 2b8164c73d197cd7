"""synthfaces: procedural cartoon faces with ground-truth attributes, the project's offline stand-in for CelebA-HQ.

Each image is a pure function of (seed, index): drawn with PIL at 4x the target size and downsampled with Lanczos, so
features stay readable at 32x32. The mouth is drawn bold (an open smile, a flat line, a frown) because "smiling" is
the attribute the demo edits.
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

MOUTHS = ("smiling", "neutral", "frowning")
HAIR_COLOURS = ("black", "brown", "blond", "red", "grey")
HAIR_LENGTHS = ("short", "long")
SKINS = ("pale", "light", "tan", "dark")
BACKGROUNDS = ("white", "blue", "green", "pink", "yellow", "grey")

_HAIR_RGB = {
    "black": (30, 28, 30),
    "brown": (110, 65, 30),
    "blond": (235, 205, 95),
    "red": (200, 65, 30),
    "grey": (165, 165, 170),
}
_SKIN_RGB = {"pale": (250, 225, 210), "light": (235, 195, 160), "tan": (200, 150, 105), "dark": (130, 85, 55)}
_BG_RGB = {
    "white": (238, 238, 238),
    "blue": (120, 165, 225),
    "green": (130, 200, 140),
    "pink": (235, 165, 200),
    "yellow": (240, 225, 120),
    "grey": (120, 120, 125),
}
_HAT_RGB = (40, 50, 140)

# dataset seed of each split python -m asyrp.synthfaces.data writes (held out from the DDPM's, CLIP's, oracle's faces)
SPLIT_SEEDS = {"train": 1, "test": 2, "select": 3, "labelled": 4}

# the binary/categorical heads of the oracle, in this order
HEADS = {
    "mouth": MOUTHS,
    "hair_colour": HAIR_COLOURS,
    "hair_length": HAIR_LENGTHS,
    "glasses": (False, True),
    "hat": (False, True),
    "skin": SKINS,
    "background": BACKGROUNDS,
}


@dataclass(frozen=True)
class Face:
    mouth: str
    hair_colour: str
    hair_length: str
    glasses: bool
    hat: bool
    skin: str
    background: str
    dx: float  # pose offsets and scale, in fractions of the image
    dy: float
    scale: float

    def caption(self) -> str:
        extras = [w for w, on in (("glasses", self.glasses), ("a hat", self.hat)) if on]
        tail = (" with " + " and ".join(extras)) if extras else ""
        return f"a {self.mouth} face with {self.hair_length} {self.hair_colour} hair{tail}"

    def labels(self) -> dict[str, int]:
        """Class index per oracle head."""
        return {k: list(v).index(getattr(self, k)) for k, v in HEADS.items()}

    def replace(self, **kw) -> Face:
        return Face(**{**asdict(self), **kw})


def sample_face(seed: int, index: int) -> Face:
    """The attributes of image `index` of dataset `seed` (smiling/neutral/frowning 1/3 each; glasses, hat 25%)."""
    r = random.Random(seed * 1_000_003 + index)
    return Face(
        mouth=r.choice(MOUTHS),
        hair_colour=r.choice(HAIR_COLOURS),
        hair_length=r.choice(HAIR_LENGTHS),
        glasses=r.random() < 0.25,
        hat=r.random() < 0.25,
        skin=r.choice(SKINS),
        background=r.choice(BACKGROUNDS),
        dx=r.uniform(-0.05, 0.05),
        dy=r.uniform(-0.04, 0.04),
        scale=r.uniform(0.92, 1.06),
    )


def render(face: Face, size: int = 32, supersample: int = 4) -> Image.Image:
    """Draw `face` as an RGB image of `size` x `size`."""
    S = size * supersample
    img = Image.new("RGB", (S, S), _BG_RGB[face.background])
    d = ImageDraw.Draw(img)
    u = S / 128.0 * face.scale  # drawing unit: coordinates below are on a 128 grid
    cx, cy = S / 2 + face.dx * S, S / 2 + face.dy * S + 6 * u

    def box(x0, y0, x1, y1):
        return [cx + x0 * u, cy + y0 * u, cx + x1 * u, cy + y1 * u]

    hair = _HAIR_RGB[face.hair_colour]
    if face.hair_length == "long":  # drapes behind the face down to the shoulders
        d.rectangle(box(-40, -30, 40, 52), fill=hair)
    d.ellipse(box(-42, -56, 42, 20), fill=hair)  # crown
    d.ellipse(box(-32, -40, 32, 44), fill=_SKIN_RGB[face.skin])  # face
    d.chord(box(-33, -46, 33, -6), start=180, end=360, fill=hair)  # fringe
    for ex in (-13, 13):  # eyes
        d.ellipse(box(ex - 5, -8, ex + 5, 2), fill=(255, 255, 255))
        d.ellipse(box(ex - 3, -6, ex + 3, 1), fill=(25, 25, 35))
    if face.glasses:
        for ex in (-13, 13):
            d.ellipse(box(ex - 10, -13, ex + 10, 7), outline=(15, 15, 15), width=max(1, round(4 * u)))
        d.line(box(-3, -4, 3, -4), fill=(15, 15, 15), width=max(1, round(4 * u)))
    w = max(1, round(5 * u))
    if face.mouth == "smiling":  # open smile: a filled lower half-disc with teeth
        d.chord(box(-17, 4, 17, 34), start=0, end=180, fill=(150, 20, 30))
        d.rectangle(box(-13, 19, 13, 23), fill=(255, 255, 255))
    elif face.mouth == "neutral":
        d.line(box(-13, 24, 13, 24), fill=(120, 30, 35), width=w)
    else:  # frowning: an arch
        d.arc(box(-15, 20, 15, 40), start=200, end=340, fill=(120, 30, 35), width=w)
    if face.hat:
        d.rectangle(box(-30, -74, 30, -42), fill=_HAT_RGB)
        d.rectangle(box(-46, -46, 46, -36), fill=_HAT_RGB)
    return img.resize((size, size), Image.LANCZOS)


def render_array(seed: int, start: int, count: int, size: int = 32) -> tuple[np.ndarray, list[Face]]:
    """uint8 images (count, size, size, 3) and their attributes for indices start .. start+count-1."""
    faces = [sample_face(seed, i) for i in range(start, start + count)]
    arr = np.stack([np.asarray(render(f, size)) for f in faces])
    return arr, faces


def write_example_faces(out: Path, n: int, seed: int = 11) -> list[Path]:
    """``n`` rendered faces that do not smile yet (dataset seed 11, not a training split): the editor's examples."""
    out.mkdir(parents=True, exist_ok=True)
    paths, i = [], 0
    while len(paths) < n:
        face, i = sample_face(seed, i), i + 1
        if face.mouth != "smiling":
            paths.append(out / f"face_{i - 1}.png")
            render(face).save(paths[-1])
    return paths
