"""The region-mask file format, in one place: where an attribute's edit is allowed to act, at image resolution.

``mask.pt`` (``MASK_FORMAT``), loadable with ``torch.load(..., weights_only=True)``:
{"format", "mask": float tensor (H, W) in [0, 1] at image resolution (1 = inside the attribute's region),
"image_size": int (= H = W), "source": str (how it was found: a region finder, a user's drawing, ...),
"attribute": str}. ``save_mask`` writes it (checked, atomically), ``read_mask`` reads it with one clear error per
fault, ``check_mask`` checks an in-memory mask against the images it is meant for. A region finder
(asyrp.directions.regions), LOCO Edit's masked Jacobian and the mask layer on delta_h all read and write through here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .ops.errors import AsyrpUserError
from .ops.io import atomic_save

MASK_FORMAT = "asyrp-mask/1"
MASK_KEYS = ("mask", "image_size", "source", "attribute")


def check_mask(mask: Any, image_size: int | None = None, *, what: str = "mask") -> torch.Tensor:
    """The mask as a float (H, W) tensor, checked: square, values in [0, 1], not empty, and ``image_size`` wide
    when given. One AsyrpUserError naming the fault and the fix."""
    if not isinstance(mask, torch.Tensor):
        raise AsyrpUserError(f"{what} is a {type(mask).__name__}, not a tensor: write it with asyrp.masks.save_mask")
    m = mask.detach().float().cpu()
    if m.dim() != 2 or m.shape[0] != m.shape[1]:
        raise AsyrpUserError(
            f"{what} has shape {tuple(m.shape)}: a mask is one (H, W) square image of the region (1 inside, 0 outside)"
        )
    if image_size is not None and m.shape[0] != int(image_size):
        raise AsyrpUserError(
            f"{what} is {m.shape[0]}x{m.shape[1]} but the images are {image_size}x{image_size}: make the mask "
            f"at the backbone's image size (rerun the region finder on this backbone, or resize the mask)"
        )
    if not bool(torch.isfinite(m).all()) or float(m.min()) < 0 or float(m.max()) > 1:
        raise AsyrpUserError(f"{what} has values outside [0, 1]: a mask weighs each pixel between 0 and 1")
    if float(m.max()) <= 0:
        raise AsyrpUserError(f"{what} is empty (all zeros): the region holds no pixel; lower the threshold or redraw")
    if float(m.min()) >= 1:
        raise AsyrpUserError(f"{what} covers every pixel: nothing lies outside the region; raise the threshold")
    return m


def change_region(diff: torch.Tensor, threshold: float | torch.Tensor, dilate: int) -> torch.Tensor:
    """(B, 1, H, W) in {0, 1}: the pixels where ``diff`` (B, C, H, W), a change between two images, exceeds
    ``threshold`` (a number, or one per image shaped (B, 1, 1, 1)) in some channel, grown by ``dilate`` pixels (P_t
    is a blurred x0, so an attribute's change spreads a little beyond its pixels). The twins' region and the P_t
    hold of an edit are both this."""
    region = (diff.abs().amax(1, keepdim=True) > threshold).to(diff.dtype)
    if dilate:
        region = F.max_pool2d(region, 2 * dilate + 1, stride=1, padding=dilate)
    return region


def held_eps(eps: torch.Tensor, eps_edit: torch.Tensor, hold: float, dilate: int) -> torch.Tensor:
    """eps_edit inside the region where the edit changes P_t by more than ``hold`` x its largest change on that image
    (grown by ``dilate`` pixels), eps outside: P_t is linear in eps, so this is P_t^edit inside and P_t^orig outside
    (``plan.hold``, applied by ``samplers.edit``: the low, spread change an attribute's delta_h also makes elsewhere
    is dropped, at no extra network pass). Each row of the batch has its own region."""
    change = eps_edit - eps
    peak = change.abs().flatten(1).amax(1).view(-1, *([1] * (change.dim() - 1)))
    region = change_region(change, hold * peak, dilate)
    return eps + region * change


def mask_payload(mask: torch.Tensor, *, source: str, attribute: str) -> dict[str, Any]:
    """The ``mask.pt`` object of a checked mask."""
    m = check_mask(mask)
    return {
        "format": MASK_FORMAT,
        "mask": m.clone(),
        "image_size": int(m.shape[0]),
        "source": str(source),
        "attribute": str(attribute),
    }


def save_mask(mask: torch.Tensor, path: str | Path, *, source: str, attribute: str) -> Path:
    """Write the mask file atomically (checked first: a bad mask never reaches the disk)."""
    obj = mask_payload(mask, source=source, attribute=attribute)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_save(obj, path)
    return path


def read_mask(path: str | Path, image_size: int | None = None) -> dict[str, Any]:
    """The mask file at ``path``, read safely (tensors only) and checked (against ``image_size`` when given):
    {"mask" (H, W) float, "image_size", "source", "attribute"}. A ``.png`` is a mask a user drew (grey level / 255)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise AsyrpUserError(f"mask file {path} does not exist: make one with `python discover.py method=region`")
    if path.suffix.lower() == ".png":  # a mask the user drew: grey level / 255, white = inside
        return _png_mask(path, image_size)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 (any unreadable file is the same user fault)
        raise AsyrpUserError(
            f"mask file {path} is not a readable tensor file ({type(err).__name__}): write it with "
            "asyrp.masks.save_mask"
        ) from err
    missing = [k for k in MASK_KEYS if not isinstance(obj, Mapping) or k not in obj]
    if missing:
        raise AsyrpUserError(
            f"mask file {path} lacks {', '.join(missing)}: a mask file holds {', '.join(MASK_KEYS)} "
            "(write it with asyrp.masks.save_mask)"
        )
    m = check_mask(obj["mask"], image_size, what=f"mask file {path}")
    if int(obj["image_size"]) != m.shape[0]:
        raise AsyrpUserError(f"mask file {path} says image_size={obj['image_size']} but holds a {m.shape[0]}-px mask")
    return {
        "mask": m,
        "image_size": int(obj["image_size"]),
        "source": str(obj["source"]),
        "attribute": str(obj["attribute"]),
    }


def _png_mask(path: Path, image_size: int | None) -> dict[str, Any]:
    """A user's PNG as a mask (grey level / 255, 1 = inside), checked like a mask file."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as img:
            grey = torch.frombuffer(bytearray(img.convert("L").tobytes()), dtype=torch.uint8)
            size = img.size
    except (OSError, UnidentifiedImageError) as err:
        raise AsyrpUserError(f"mask file {path} is not a readable PNG ({err}): save the mask as a grey PNG") from err
    m = check_mask(grey.reshape(size[1], size[0]).float() / 255.0, image_size, what=f"mask file {path}")
    return {"mask": m, "image_size": int(m.shape[0]), "source": f"user PNG {path.name}", "attribute": ""}
