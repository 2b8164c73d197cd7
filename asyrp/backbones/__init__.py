"""Frozen backbones: one call for every checkpoint family."""
from .base import Backbone, Encoding, UNet2DBackbone

__all__ = ["Backbone", "Encoding", "UNet2DBackbone"]
