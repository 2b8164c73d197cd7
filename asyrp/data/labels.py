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


def labelled_split(
    folder: str | Path | None,
    attributes: Sequence[str],
    *,
    n_images: int,
    image_size: int,
    key: str,
    user: str,
    needs: str,
) -> tuple[list[Path], dict[str, torch.Tensor]]:
    """(files, {attribute: 1/0 per file}) of a labelled split (``key``.labelled, the data writer's attributes.json),
    read by a method that trains its own network on it (``user``: keep=probe, guide=classifier). A missing or empty
    folder, or an attribute without both classes in it, is one error naming the setting and the fix; ``needs``
    ("the probe of kept attribute {}") says what an attribute's labels are for."""
    from .images import IMAGE_SUFFIXES, scan_images

    if not folder:
        raise AsyrpUserError(f"{user} needs {key}.labelled: a folder of labelled images ({WRITE_LABELLED})")
    folder = Path(str(folder)).expanduser()
    if not folder.is_dir() or not any(f.suffix.lower() in IMAGE_SUFFIXES for f in folder.iterdir()):
        raise AsyrpUserError(
            f"{key}.labelled={folder} holds no images: {user} needs a labelled split of its own "
            f"({WRITE_LABELLED}; with --out data/synthfaces_<attr> it is written beside train/)"
        )
    files, _ = scan_images(folder, n_images, image_size, what=f"{key}.labelled", at_most=True)
    what = f"{key}.labelled reads the data writer's labels"
    labels = {a: writer_labels(folder, files, a, what=what, alternative="", needs=needs.format(a)) for a in attributes}
    return files, labels
