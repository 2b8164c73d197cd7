"""Small helpers for the training side: one error class for bad user input, atomic writes, fingerprints."""
from .errors import AsyrpUserError
from .io import atomic_save, atomic_write_png, file_digest, module_fingerprint, tensor_digest

__all__ = ["AsyrpUserError", "atomic_save", "atomic_write_png", "file_digest", "module_fingerprint", "tensor_digest"]
