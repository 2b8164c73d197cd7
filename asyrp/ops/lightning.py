"""Lightning checkpoints (last.ckpt, step_*.ckpt) written atomically beside their final name.

Lightning's own writer stages the file in the system temp folder (fsspec's transaction) and then *moves* it into
place. When that folder is on another filesystem than the run folder (a tmpfs /tmp, a node-local /tmp under a
network home: both common), the move is a copy, and a kill -9 during the copy leaves a half-written last.ckpt that
the next run would try to resume from. ``AtomicCheckpointIO`` writes to a temporary file in the checkpoint's own
folder and renames it (``asyrp.ops.io.atomic_save``): a reader sees the old file or the new one, never half.
Remote paths (``s3://`` ...) keep Lightning's writer.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from lightning_fabric.utilities.cloud_io import get_filesystem
from pytorch_lightning.plugins.io import TorchCheckpointIO

from .io import atomic_save


class AtomicCheckpointIO(TorchCheckpointIO):
    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        fs = get_filesystem(path)
        if storage_options is not None or "file" not in (
            fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
        ):
            return super().save_checkpoint(checkpoint, path, storage_options)
        Path(os.fspath(path)).parent.mkdir(parents=True, exist_ok=True)
        atomic_save(checkpoint, path)
