"""Reading image folders into [-1, 1] tensors; unusable files are skipped with a reason, never fatal on their own.

- ``scan_images(source, n_images, size)``: the usable image files of a folder (name order) or a glob, and every
  other file with the reason it is skipped (zero bytes, not an image, a format Pillow cannot decode such as .heic,
  truncated, a decompression bomb, hidden, beyond n_images, ...): every file is accounted for. Any format Pillow
  reads is used (.gif, .ico, .ppm, ...; an animated GIF or multi-page TIFF gives its first frame, noted). Raises ONE
  ``AsyrpUserError`` for a missing folder, an empty folder, or a folder where nothing is usable.
- ``list_images(folder, n_images)``: the usable files only (warnings for the others): training's view.
- ``read_image(path, size)``: (3, size, size) in [-1, 1] plus notes; any colour mode (RGB, RGBA composited on white,
  grayscale, palette, 16-bit), centre square crop, bicubic resize (up or down) to the backbone's size.
- ``read_images(source, size, n_images)``: the first usable images of a folder or glob as one (N, 3, size, size)
  tensor; ``read_image_files(paths, size)``: named files, in order. Training, editing, interval measurement, the
  experiments and the judge all read through these, so every image is prepared the same way.
"""

from __future__ import annotations

import glob as _glob
import logging
from pathlib import Path

import numpy as np
import torch

from ..ops.errors import AsyrpUserError

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff", ".gif")
#: image formats Pillow cannot decode (without plug-ins): named in the skip reason, with the fix
UNSUPPORTED_SUFFIXES = (
    ".heic",
    ".heif",
    ".avif",
    ".svg",
    ".psd",
    ".raw",
    ".cr2",
    ".nef",
    ".arw",
    ".dng",
    ".exr",
    ".jxl",
)
#: larger images are refused (decompression bombs; Pillow's own limit is 89.5 Mpx for a warning, 179 Mpx for an error)
MAX_PIXELS = 8192 * 8192
#: a side shorter than this is upscaled by more than 8x for a 256px backbone: processed, but noted
SMALL_SIDE = 32


class ImageProblem(AsyrpUserError):
    """One image file cannot be used; ``reason`` says why (the caller skips it or stops)."""

    def __init__(self, path: Path, reason: str):
        super().__init__(f"cannot read image {path}: {reason}; remove or replace the file")
        self.path, self.reason = Path(path), reason


def _is_glob(source: str) -> bool:
    return any(c in source for c in "*?[")


def candidate_files(source: str | Path) -> list[Path]:
    """Every file of a folder (sorted by name; each is then used or skipped with a reason), or the files a glob
    matches (sorted)."""
    s = str(source)
    if _is_glob(s):
        files = sorted(Path(p) for p in _glob.glob(str(Path(s).expanduser()), recursive=True) if Path(p).is_file())
        if not files:
            raise AsyrpUserError(f"no files match {s!r}: fix the pattern (e.g. 'faces/*.jpg') or pass a folder")
        return files
    folder = Path(s).expanduser()
    if not folder.exists():
        raise AsyrpUserError(f"image folder not found: {folder}. Set dataset.path / input_dir to a folder of images.")
    if folder.is_file():
        return [folder]
    files = sorted(p for p in folder.iterdir() if p.is_file())
    if not files:
        raise AsyrpUserError(
            f"no images ({', '.join(IMAGE_SUFFIXES)}) in {folder}. Put the images there or fix the path."
        )
    return files


def _to_rgb(im):
    """An 8-bit RGB image from any Pillow mode (alpha composited on white, 16/32-bit scaled to 8 bits)."""
    from PIL import Image

    notes = []
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or (im.mode == "I" and arr.max(initial=0) > 255) else 255.0
        if im.mode == "F":
            hi = max(float(arr.max(initial=1.0)), 1e-12)
        arr = np.clip(arr / hi * 255.0 + 0.5, 0, 255).astype(np.uint8)
        notes.append(f"{im.mode} scaled to 8 bits")
        im = Image.fromarray(arr, mode="L")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode in ("RGB", "L") and "transparency" in im.info):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (255, 255, 255, 255))
        im = Image.alpha_composite(bg, im)
        notes.append("alpha composited on white")
    if im.mode in ("L", "1"):
        notes.append("grayscale")
    if im.mode != "RGB":
        im = im.convert("RGB")
    return im, notes


def read_image(path: str | Path, size: int) -> tuple[torch.Tensor, list[str]]:
    """(3, size, size) in [-1, 1] and notes on what was done; ``ImageProblem`` (with a reason) if unusable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        n_bytes = path.stat().st_size
    except FileNotFoundError:
        raise ImageProblem(path, "file not found") from None
    if n_bytes == 0:
        raise ImageProblem(path, "empty file (0 bytes)")
    try:
        with Image.open(path) as im:
            w, h = im.size
            if w < 1 or h < 1:
                raise ImageProblem(path, f"degenerate size {w}x{h}")
            if w * h > MAX_PIXELS:
                raise ImageProblem(path, f"too large ({w}x{h} = {w * h / 1e6:.0f} Mpx > {MAX_PIXELS / 1e6:.0f} Mpx)")
            frames, fmt = getattr(im, "n_frames", 1), im.format or path.suffix.lstrip(".").upper()
            if frames > 1:
                im.seek(0)  # animated / multi-page: the first frame
            im.load()
            im, notes = _to_rgb(im)
            if frames > 1:
                notes.insert(0, f"{fmt} with {frames} frames: the first frame used")
    except ImageProblem:
        raise
    except Image.DecompressionBombError as err:
        raise ImageProblem(path, f"refused as a decompression bomb ({err})") from err
    except UnidentifiedImageError:
        if path.suffix.lower() in UNSUPPORTED_SUFFIXES:
            raise ImageProblem(
                path, f"unsupported image format {path.suffix} (Pillow cannot decode it): convert it to PNG or JPEG"
            ) from None
        raise ImageProblem(path, "not an image (Pillow cannot identify it)") from None
    except (OSError, SyntaxError, ValueError, EOFError) as err:  # truncated / damaged data
        raise ImageProblem(path, f"damaged or truncated ({type(err).__name__}: {err})") from err
    except Exception as err:  # noqa: BLE001 - a decoder crash on hostile input is still just a bad file
        raise ImageProblem(path, f"unreadable ({type(err).__name__}: {err})") from err
    w, h = im.size
    s = min(w, h)
    if s < SMALL_SIDE and s < size:
        notes.append(f"small ({w}x{h}): upscaled")
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    if s != size:
        im = im.resize((size, size), Image.BICUBIC)
    arr = torch.from_numpy(np.asarray(im, dtype=np.float32).copy()).permute(2, 0, 1)
    return arr / 127.5 - 1.0, notes


def load_image(path: str | Path, size: int) -> torch.Tensor:
    """(3, size, size) in [-1, 1]; ``AsyrpUserError`` (an ``ImageProblem``) naming the file if unusable."""
    return read_image(path, size)[0]


def scan_images(
    source: str | Path, n_images: int | None = None, size: int = 32, what: str = "input_dir", at_most: bool = False
) -> tuple[list[Path], list[tuple[Path, str]]]:
    """(usable files, [(skipped file, reason)]): the first ``n_images`` usable files of a folder or glob.

    Every candidate is decoded once here (cheap next to any network pass), so a damaged file is found before any
    work starts. Raises one AsyrpUserError when nothing is usable or (unless ``at_most``) fewer than ``n_images`` are.
    """
    files = candidate_files(source)
    good: list[Path] = []
    skipped: list[tuple[Path, str]] = []
    for f in files:
        if n_images is not None and n_images > 0 and len(good) >= n_images:
            skipped.append((f, f"not needed: n_images={n_images} usable images come before it"))
            continue
        if f.name.startswith("."):
            skipped.append((f, "hidden file"))
            continue
        try:
            _, notes = read_image(f, size)
        except ImageProblem as err:
            skipped.append((f, err.reason))
            # a side file (attributes.json, notes.txt) is expected in a folder: said, not warned about
            side = f.suffix.lower() not in IMAGE_SUFFIXES + UNSUPPORTED_SUFFIXES and err.reason.startswith(
                "not an image"
            )
            log.log(logging.INFO if side else logging.WARNING, "skipping %s: %s", f, err.reason)
            continue
        if any("first frame" in n for n in notes):
            log.info("%s: %s", f, "; ".join(notes))
        good.append(f)
    log.info(
        "%s: %d of %d files used, %d skipped%s",
        source,
        len(good),
        len(files),
        len(skipped),
        ""
        if not skipped
        else " (" + "; ".join(f"{p.name}: {r}" for p, r in skipped[:8]) + (" ..." if len(skipped) > 8 else "") + ")",
    )
    if not good:
        shown = "; ".join(f"{p.name}: {r}" for p, r in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        raise AsyrpUserError(
            f"none of the {len(skipped)} files of {source} is a usable image ({shown}): "
            f"replace the files or point {what} elsewhere"
        )
    if n_images is not None and n_images > 0 and len(good) < n_images and not at_most:
        shown = ", ".join(f"{p.name}: {r}" for p, r in skipped[:5]) + (" ..." if len(skipped) > 5 else "")
        extra = f" ({len(skipped)} unusable skipped: {shown})" if skipped else ""
        raise AsyrpUserError(
            f"n_images={n_images} but {source} holds only {len(good)} usable images{extra}: "
            "lower n_images or add images"
        )
    return good, skipped


def list_images(folder: str | Path, n_images: int | None = None, size: int = 32) -> list[Path]:
    """The first ``n_images`` usable image files of ``folder`` in name order (sorted, so every run sees the same
    set); unusable files are skipped with a warning."""
    return scan_images(folder, n_images, size, what="dataset.path")[0]


def read_image_files(paths: list[str | Path], size: int) -> torch.Tensor:
    """(N, 3, size, size) in [-1, 1] from the named files, in order (``ImageProblem`` for an unusable one)."""
    return torch.stack([read_image(p, size)[0] for p in paths])


def read_images(source: str | Path, size: int, n_images: int | None = None, what: str = "images") -> torch.Tensor:
    """The first ``n_images`` (at most; None: all) usable images of a folder or glob (name order) as one tensor;
    unusable files are skipped with a warning."""
    return read_image_files(scan_images(source, n_images, size, what=what, at_most=True)[0], size)
