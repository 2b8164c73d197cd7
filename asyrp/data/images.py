"""Reading an image folder into [-1, 1] tensors, with one clear error for a missing folder or an unreadable file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..utils.errors import AsyrpUserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


def list_images(folder: str | Path, n_images: int | None = None) -> list[Path]:
    """The first ``n_images`` image files of ``folder`` in name order (sorted, so every run sees the same set)."""
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        raise AsyrpUserError(f"image folder not found: {folder}. Set dataset.path to a folder of images.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise AsyrpUserError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}. Put the images there or fix dataset.path.")
    if n_images is not None and n_images > 0:
        if len(files) < n_images:
            raise AsyrpUserError(
                f"dataset.n_images={n_images} but {folder} holds only {len(files)} images: lower n_images or add images."
            )
        files = files[:n_images]
    return files


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1]: RGB, centre square crop, bicubic resize."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as im:
            im.load()
            im = im.convert("RGB")
    except FileNotFoundError as err:
        raise AsyrpUserError(f"image not found: {path}") from err
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as err:
        raise AsyrpUserError(f"cannot read image {path} ({type(err).__name__}: {err}); remove or replace the file.") from err
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
    return arr / 127.5 - 1.0
