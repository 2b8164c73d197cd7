"""The synthfaces world: procedural faces, and the DDPM, CLIP and attribute oracle this project trains on them."""

from .render import (
    BACKGROUNDS,
    HAIR_COLOURS,
    HAIR_LENGTHS,
    HEADS,
    MOUTHS,
    SKINS,
    Face,
    render,
    render_array,
    sample_face,
)

__all__ = [
    "BACKGROUNDS",
    "HAIR_COLOURS",
    "HAIR_LENGTHS",
    "HEADS",
    "MOUTHS",
    "SKINS",
    "Face",
    "render",
    "render_array",
    "sample_face",
]
