"""Write synthfaces image folders with their ground truth: ``python -m asyrp.synthfaces.data --out data/synthfaces``.

train/ (dataset seed 1) is what h-functions train on, test/ (seed 2) what the demo edits; both are held out from the
DDPM's, CLIP's and oracle's training faces. ``--exclude mouth=smiling`` keeps only faces an edit can change.
"""
from __future__ import annotations

import argparse
import json
import os
from dataclasses import asdict
from pathlib import Path

from .render import render, sample_face

SPLIT_SEEDS = {"train": 1, "test": 2}


def write_split(folder: str | Path, seed: int, n: int, exclude: dict[str, str] | None = None, size: int = 32) -> Path:
    """n faces of dataset ``seed`` (skipping those with an excluded attribute value) as PNGs + attributes.json."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    exclude = exclude or {}
    attrs, i = {}, 0
    while len(attrs) < n:
        face = sample_face(seed, i)
        i += 1
        if any(str(getattr(face, k)) == v for k, v in exclude.items()):
            continue
        name = f"face_{len(attrs):04d}.png"
        tmp = folder / (name + ".tmp")
        render(face, size).save(tmp, format="PNG")
        os.replace(tmp, folder / name)
        attrs[name] = {**asdict(face), "caption": face.caption()}
    tmp = folder / "attributes.json.tmp"
    tmp.write_text(json.dumps(attrs, indent=1))
    os.replace(tmp, folder / "attributes.json")
    return folder


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--out", default="data/synthfaces")
    p.add_argument("--n-train", type=int, default=64)
    p.add_argument("--n-test", type=int, default=64)
    p.add_argument("--exclude", action="append", default=["mouth=smiling"], help="attr=value to leave out")
    args = p.parse_args(argv)
    exclude = dict(e.split("=", 1) for e in args.exclude if e)
    for split, n in (("train", args.n_train), ("test", args.n_test)):
        print(write_split(Path(args.out) / split, SPLIT_SEEDS[split], n, exclude))


if __name__ == "__main__":
    main()
