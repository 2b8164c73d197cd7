"""Training data: images (or seeded noise) -> the DDIM inversion cache -> batches for the h-function.

The datamodule (Lightning) is imported when first asked for: edit.py and the data writers read images and the cache
only, and importing Lightning (with the torchmetrics and torchvision models it pulls in) costs each of those processes
about 2.4 CPU-s (docs/performance.md, "make demo").
"""

from importlib import import_module

from .cache import CacheEntry, InversionCache, Source, image_sources, noise_sources
from .images import IMAGE_SUFFIXES, list_images, load_image, read_image, read_image_files, read_images

_LAZY = {"AsyrpDataModule": ".datamodule", "CachedDataset": ".datamodule"}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "AsyrpDataModule",
    "CachedDataset",
    "CacheEntry",
    "InversionCache",
    "Source",
    "noise_sources",
    "image_sources",
    "IMAGE_SUFFIXES",
    "list_images",
    "load_image",
    "read_image",
    "read_image_files",
    "read_images",
]
