"""Atomic file writes and content fingerprints (the inversion cache and the checkpoints rely on both)."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import annotate


def _tmp_beside(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a shared cache/checkpoint should read like any file
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, size: int | None = None):
    """Yield a temporary path beside ``path``; on success it replaces ``path``, on failure it is removed.

    An ``OSError`` on the way (a full disk, a quota, no permission) leaves no temporary file and carries the final
    path and ``size`` (bytes being written) for the one-line message (asyrp/ops/faults)."""

    path = Path(path)
    tmp = None
    try:
        tmp = _tmp_beside(path)
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        raise annotate(err, path, size)  # noqa: B904 (the same error, re-raised with its path)
    finally:
        if tmp is not None and tmp.exists():
            tmp.unlink()


def _serialized(save, *args, **kwargs) -> bytes:
    buf = io.BytesIO()
    save(*args, buf, **kwargs)
    return buf.getvalue()


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save to a temporary file beside ``path`` then os.replace: readers never see half a file. Serialised in
    memory first (a write that fails can then say how many bytes it needed); through a file object the archive
    inside is named "archive" whatever the temporary name, so the same object gives the same bytes every time (two
    processes that write one cache entry write identical files)."""
    return atomic_write_bytes(_serialized(torch.save, obj), path)


def atomic_write_png(img: torch.Tensor, path: str | os.PathLike) -> Path:
    """Write a (3, H, W) image in [-1, 1] as PNG, atomically."""
    from PIL import Image

    arr = ((img.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(1, 2, 0).numpy()
    return atomic_write_bytes(_serialized(lambda f: Image.fromarray(arr).save(f, format="PNG")), path)


def atomic_write_bytes(data: bytes, path: str | os.PathLike) -> Path:
    """Write ``data`` to a temporary file beside ``path``, fsync, then os.replace."""
    path = Path(path)
    with atomic_path(path, size=len(data)) as tmp, open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return path


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    return atomic_write_bytes(text.encode("utf-8"), path)


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    import json

    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n", path)


def append_line(line: str, path: str | os.PathLike) -> None:
    """Append one line to a file that only this process writes (a journal), flushed to disk. A process killed
    in the middle leaves at most a torn last line, which readers skip."""
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(line.rstrip("\n") + "\n")
            f.flush()
            os.fsync(f.fileno())
    except OSError as err:
        raise annotate(err, path, len(line))  # noqa: B904 (the same error, with its path)


def file_digest(path: str | os.PathLike) -> str:
    h = hashlib.blake2b(digest_size=16)
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def tensor_digest(*tensors: torch.Tensor) -> str:
    h = hashlib.blake2b(digest_size=16)
    for t in tensors:
        t = t.detach().cpu().contiguous()
        h.update(str((tuple(t.shape), str(t.dtype))).encode())
        # flat first: a "contiguous" tensor with size-1 dims may keep odd strides there (a 1x1 conv weight in
        # channels_last), which view(uint8) refuses; the bytes are the same, in the same order
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def module_fingerprint(module: torch.nn.Module) -> str:
    """Digest of a module's class and every tensor of its state dict, memoised on the module (frozen weights)."""
    cached = getattr(module, "_asyrp_fingerprint", None)
    if cached is not None:
        return cached
    h = hashlib.blake2b(digest_size=16)
    h.update(type(module).__qualname__.encode())
    for name, t in module.state_dict().items():
        h.update(name.encode())
        h.update(tensor_digest(t).encode())
    digest = h.hexdigest()
    object.__setattr__(module, "_asyrp_fingerprint", digest)
    return digest
