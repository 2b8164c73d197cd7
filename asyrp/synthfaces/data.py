"""Write synthfaces image folders with their ground truth: ``python -m asyrp.synthfaces.data --out data/synthfaces``.

train/ (dataset seed 1) is what h-functions train on, test/ (seed 2) what the demo edits and recipes are reported on,
select/ (seed 3, ``--n-select``) what a sweep (``hparams_search=edit_quality``) judges trials on, so that a recipe
chosen by a score is reported on faces the choice never saw. All are held out from the DDPM's, CLIP's and oracle's
training faces. ``--exclude mouth=smiling`` (the default) keeps only faces an edit can change; ``--only mouth=smiling``
keeps only faces that have a value (for reverse edits). labelled/ (seed 4, ``--n-labelled``, nothing excluded) holds faces
with and without every attribute, with their labels, for the supervised direction finders (discover.py
method=mean_diff|boundary). twins/ (``--twins glasses``) holds train/'s faces drawn again with the attribute switched
on, under the same file names: the paired images of guide=twins (asyrp/twins.py).
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path

from ..ops.cli import run_cli
from ..ops.errors import AsyrpUserError
from ..ops.io import atomic_path, atomic_write_json
from .render import SPLIT_SEEDS, render, sample_face


def write_split(
    folder: str | Path,
    seed: int,
    n: int,
    exclude: dict[str, str] | None = None,
    size: int = 32,
    only: dict[str, str] | None = None,
) -> Path:
    """n faces of dataset ``seed`` (skipping those with an excluded attribute value, or without an ``only`` value) as
    PNGs + attributes.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exclude, only = exclude or {}, only or {}
    clash = sorted(k for k in exclude if only.get(k) == exclude[k])
    if clash:  # no face could ever be written: refuse instead of sampling forever
        raise AsyrpUserError(
            f"synthfaces data: {', '.join(f'{k}={exclude[k]}' for k in clash)} is both excluded and "
            "required; drop one (e.g. --exclude none with --only)"
        )
    attrs, i = {}, 0
    while len(attrs) < n:
        face = sample_face(seed, i)
        i += 1
        if any(str(getattr(face, k)) == v for k, v in exclude.items()) or any(
            str(getattr(face, k)) != v for k, v in only.items()
        ):
            continue
        name = f"face_{len(attrs):04d}.png"
        with atomic_path(folder / name) as tmp:
            render(face, size).save(tmp, format="PNG")
        attrs[name] = {**asdict(face), "caption": face.caption()}
    atomic_write_json(attrs, folder / "attributes.json")
    return folder


def write_twins(train: str | Path, attr: str, folder: str | Path | None = None, size: int = 32) -> Path:
    """The faces of ``train`` (written by write_split) drawn again with ``attr`` switched on, same file names, in
    ``folder`` (default: twins/ beside train/), with their attributes.json."""
    from .edits import ATTRIBUTES, read_faces, switched

    if attr not in ATTRIBUTES:
        raise AsyrpUserError(f"synthfaces data: --twins {attr!r} is not one of {sorted(ATTRIBUTES)}")
    train = Path(train)
    folder = Path(folder) if folder is not None else train.parent / "twins"
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in train.glob("face_*.png"))
    attrs = {}
    for name, face in zip(names, read_faces([train / n for n in names])):
        twin = switched(face, [attr])
        with atomic_path(folder / name) as tmp:
            render(twin, size).save(tmp, format="PNG")
        attrs[name] = {**asdict(twin), "caption": twin.caption()}
    atomic_write_json(attrs, folder / "attributes.json")
    return folder


def write_masks(faces: str | Path, attr: str, folder: str | Path, size: int = 32, dilate: int = 1) -> Path:
    """Per-image masks of where ``attr`` is drawn on the faces of ``faces``: the pixels where the face drawn with it
    differs from the face drawn with any other value of its field by more than 0.1 in a channel, grown by ``dilate``
    px (so the same whether a face has it or lacks it), one ``<name>.png`` each (white = the region): what a face
    parser would give a user of edit.py's ``masks=``, drawn exactly by the renderer here."""
    import numpy as np
    from PIL import Image

    from ..masks import change_region
    from .edits import ATTRIBUTES, draw, read_faces
    from .render import HEADS

    if attr not in ATTRIBUTES:
        raise AsyrpUserError(f"synthfaces data: --masks {attr!r} is not one of {sorted(ATTRIBUTES)}")
    faces, folder = Path(faces), Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(p.name for p in faces.glob("face_*.png"))
    parsed = read_faces([faces / n for n in names])
    field, value = ATTRIBUTES[attr]
    on = draw([f.replace(**{field: value}) for f in parsed], size)
    diff = sum((on - draw([f.replace(**{field: v}) for f in parsed], size)).abs() for v in HEADS[field] if v != value)
    for name, region in zip(names, change_region(diff, 0.1, dilate)[:, 0]):
        with atomic_path(folder / name) as tmp:
            Image.fromarray((region.numpy() * 255).astype(np.uint8), mode="L").save(tmp, format="PNG")
    return folder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="data/synthfaces")
    p.add_argument(
        "--n-train", type=int, default=256
    )  # the smiling recipe trains on 256 (the others on the first 64-128)
    p.add_argument("--n-test", type=int, default=64)
    p.add_argument("--n-select", type=int, default=0, help="faces of the sweep's selection split (0: none)")
    p.add_argument("--n-labelled", type=int, default=0, help="faces of every kind in labelled/ (0: none)")
    p.add_argument(
        "--exclude",
        action="append",
        default=None,
        help="attr=value to leave out (repeatable; default mouth=smiling; --exclude none: nothing)",
    )
    p.add_argument("--only", action="append", default=[], help="attr=value every face must have (repeatable)")
    p.add_argument("--twins", default=None, help="an attribute (glasses, hat, blond_hair, ...): train/ drawn with it")
    p.add_argument("--masks", nargs="+", default=[], help="attributes: masks/<attr>/<split>/ of where each is drawn")
    p.add_argument("--mask-dilate", type=int, default=1, help="grow each mask by this many pixels")
    args = p.parse_args(argv)
    pairs = lambda items: dict(e.split("=", 1) for e in items if e and e != "none")  # noqa: E731
    # the default exclusion (mouth=smiling) is for the smiling demo; --only picks faces itself, so it drops the default
    only = pairs(args.only)
    exclude = pairs(args.exclude if args.exclude is not None else ([] if only else ["mouth=smiling"]))
    for split, n in (("train", args.n_train), ("test", args.n_test), ("select", args.n_select)):
        if n > 0:
            print(write_split(Path(args.out) / split, SPLIT_SEEDS[split], n, exclude, only=only))
    if args.n_labelled > 0:
        print(write_split(Path(args.out) / "labelled", SPLIT_SEEDS["labelled"], args.n_labelled, {}))
    if args.twins:
        print(write_twins(Path(args.out) / "train", args.twins))
    for attr in args.masks:
        for split in ("train", "test", "select"):
            if (Path(args.out) / split).is_dir():
                folder = Path(args.out) / "masks" / attr / split
                print(write_masks(Path(args.out) / split, attr, folder, dilate=args.mask_dilate))


if __name__ == "__main__":
    run_cli(main)
