"""Labels of a labelled split, as the data writer recorded them (``attributes.json`` beside the images, one
{head: value} per file name; ``python -m asyrp.synthfaces.data --n-labelled N`` writes one). Read by the supervised
direction finders (discover.py labels=writer) and the keep probes (asyrp.probes); never by an oracle."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch

from ..ops.errors import AsyrpUserError

WRITE_LABELLED = "python -m asyrp.synthfaces.data --n-labelled 128 writes data/synthfaces/labelled"


def read_attributes(folder: Path, what: str, alternative: str = "") -> dict:
    """The writer's attributes.json of ``folder``; ``what`` names the setting that reads it (for the message)."""
    path = folder / "attributes.json"
    if not path.is_file():
        raise AsyrpUserError(
            f"{what} but {path} does not exist: write the folder with python -m "
            f"asyrp.synthfaces.data (it records every face's attributes){alternative}"
        )
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise AsyrpUserError(
            f"{path} is not readable JSON ({err}): rewrite it with python -m asyrp.synthfaces.data"
        ) from err


def writer_labels(
    folder: Path,
    files: Sequence[Path],
    target: str,
    *,
    what: str = "labels=writer",
    alternative: str = ", or pass labels=oracle",
    needs: str = "a supervised direction",
) -> torch.Tensor:
    """1/0 per file: does the data writer's attributes.json record ``target`` (head=value) for it? Both classes
    must be present (one error naming the folder, the target and the fix otherwise)."""
    attrs = read_attributes(folder, what, alternative)
    path = folder / "attributes.json"
    head, value = target.split("=", 1)
    missing = [f.name for f in files if f.name not in attrs or head not in attrs[f.name]]
    if missing:
        raise AsyrpUserError(
            f"{path} has no {head!r} for {len(missing)} images (first: {missing[0]}): rewrite the "
            f"folder with the data writer{alternative}"
        )
    y = torch.tensor([str(attrs[f.name][head]) == value for f in files])
    if y.all() or not y.any():
        raise AsyrpUserError(
            f"all {len(files)} images of {folder} are {'' if y.all() else 'not '}{target}: "
            f"{needs} needs both; use a folder with both classes ({WRITE_LABELLED})"
        )
    return y
