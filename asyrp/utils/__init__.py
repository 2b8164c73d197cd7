"""Small helpers for the training side: one error class for bad user input, atomic writes, fingerprints.

Imported lazily (module ``__getattr__``), so that ``asyrp.utils.cli`` / ``asyrp.utils.errors`` load without torch.
"""
from .errors import AsyrpUserError, TrainingDiverged

__all__ = ["AsyrpUserError", "TrainingDiverged", "atomic_save", "atomic_write_bytes", "atomic_write_json", "atomic_write_png",
           "atomic_write_text", "file_digest", "module_fingerprint", "tensor_digest"]


def __getattr__(name: str):
    if name in __all__:
        from . import io

        return getattr(io, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
