"""Training data: images (or seeded noise) -> the DDIM inversion cache -> batches for the h-function."""

from .cache import CacheEntry, InversionCache, Source, image_sources, noise_sources
from .datamodule import AsyrpDataModule, CachedDataset
from .images import IMAGE_SUFFIXES, list_images, load_image, read_image, read_image_files, read_images

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
