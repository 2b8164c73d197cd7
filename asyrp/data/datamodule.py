"""LightningDataModule: the inversion cache is built in ``prepare_data`` (rank 0 of each node), read in ``setup``.

The backbone is not a hyperparameter of the data: ``bind`` hands it (and the schedule) over before fitting.
Per-rank sharding is a DistributedSampler built here (rank r takes items r, r + N, ...); ``batch_size`` is per
process, so with N processes the global batch is N * batch_size and holds the same images as one process with
batch N * batch_size.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from ..ops.errors import AsyrpUserError
from ..ops.guard import UNGUARDED, Guard
from ..plan import EditPlan
from .cache import InversionCache, Source, image_sources, load_entry, noise_sources

KINDS = ("folder", "random_samples")


class CachedDataset(Dataset):
    """Items of the inversion cache as dicts of tensors (read from disk on access, or kept in memory).

    ``steps``: the first generation steps an item carries (training: those at t >= t_edit; entries that walked further
    down are cut to them, so every item of a batch has the same rows); None: all, with x_rec (validation, grids).
    ``twins``: guide=twins: the entry of each item's twin (asyrp.twins), whose P_t^orig the item carries as P_twin
    (and its x0 as x0_twin)."""

    def __init__(
        self, paths: list[Path], in_memory: bool = False, steps: int | None = None, twins: list[Path] | None = None
    ):
        self.paths, self.steps, self.twins = list(paths), steps, twins
        if twins is not None and len(twins) != len(self.paths):
            raise ValueError(f"{len(twins)} twin entries for {len(self.paths)} items")
        self._mem = [load_entry(p) for p in self.paths] if in_memory else None
        self._twin_mem = [load_entry(p) for p in twins] if in_memory and twins is not None else None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> dict[str, Any]:
        e = self._mem[i] if self._mem is not None else load_entry(self.paths[i])
        if self.steps is not None:
            item = {"x0": e["x0"], "x_T": e["x_T"], "P_orig": e["P_orig"][: self.steps], "t": e["t"][: self.steps]}
        else:
            item = {"x0": e["x0"], "x_T": e["x_T"], "x_rec": e["x_rec"], "P_orig": e["P_orig"], "t": e["t"]}
        if self.twins is not None:
            twin = self._twin_mem[i] if self._twin_mem is not None else load_entry(self.twins[i])
            item["P_twin"], item["x0_twin"] = twin["P_orig"][: len(item["t"])], twin["x0"]
        return {**item, "index": i}


class ResumableDataLoader(DataLoader):
    """A DataLoader whose position inside the epoch goes into last.ckpt (Lightning's ``state_dict`` protocol).

    ``progress`` returns how many batches of the current epoch were trained; after a resume from a checkpoint taken
    mid-epoch, the first pass skips that many batches, so the run continues with the batch it would have seen next
    (the sampler order is deterministic: no shuffling, or a seeded one).
    """

    def __init__(self, *args: Any, progress: Callable[[], int] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.progress = progress
        self._skip = 0

    def state_dict(self) -> dict[str, int]:
        return {"batches_done": int(self.progress()) if self.progress is not None else 0}

    def load_state_dict(self, state: dict[str, int]) -> None:
        done = int(state.get("batches_done", 0))
        self._skip = done if 0 < done < len(self) else 0  # a checkpoint at the epoch's end starts a new epoch

    def __iter__(self):
        it = super().__iter__()
        skip, self._skip = self._skip, 0
        for _ in range(skip):
            next(it)
        return it


class AsyrpDataModule(pl.LightningDataModule):
    def __init__(
        self,
        name: str = "images",
        kind: str = "folder",
        path: str | None = None,
        n_images: int = 100,
        image_size: int | None = None,
        batch_size: int = 1,
        num_workers: int = 0,
        cache_dir: str = ".cache/asyrp",
        cache_batch_size: int | None = None,
        seed: int = 0,
        n_val: int = 4,
        shuffle: bool = False,
        cache_dtype: str = "float32",
        in_memory: bool = False,
        pin_memory: bool | str = "auto",
        **unknown: Any,
    ):
        super().__init__()
        if unknown:  # a typo (dataset.n_imgaes=...) must not be silently ignored
            known = [k for k in inspect.signature(AsyrpDataModule.__init__).parameters if k not in ("self", "unknown")]
            raise AsyrpUserError(
                f"dataset.{sorted(unknown)[0]} is not a dataset option (known: {', '.join(known)}): fix the key"
            )
        if kind not in KINDS:
            raise AsyrpUserError(f"dataset.kind={kind!r} is not one of {KINDS}")
        if kind == "folder" and not path:
            raise AsyrpUserError("dataset.kind=folder needs dataset.path (a folder of images)")
        if int(n_images) < 1 or int(batch_size) < 1:
            raise AsyrpUserError(f"dataset.n_images ({n_images}) and dataset.batch_size ({batch_size}) must be >= 1")
        if cache_batch_size is not None and int(cache_batch_size) < 1:
            raise AsyrpUserError(
                f"dataset.cache_batch_size={cache_batch_size} must be >= 1, or null for max(dataset.batch_size, 4)"
            )
        # images per batch of the cache build: its batches need no gradient, so a larger one than training's is cheap
        self.cache_batch_size = max(int(batch_size), 4) if cache_batch_size is None else int(cache_batch_size)
        self.name, self.kind, self.path = name, kind, path
        self.n_images, self.image_size = int(n_images), image_size
        self.batch_size, self.num_workers = int(batch_size), int(num_workers)
        self.cache_dir, self.seed, self.n_val, self.shuffle = cache_dir, int(seed), int(n_val), bool(shuffle)
        self.cache_dtype = getattr(torch, cache_dtype)
        self.in_memory = in_memory
        # pinned host memory makes host-to-GPU copies asynchronous; "auto" = when CUDA is available
        self.pin_memory = torch.cuda.is_available() if pin_memory == "auto" else bool(pin_memory)
        self.cache: InversionCache | None = None
        self.full_cache: InversionCache | None = None
        self.train_steps: int | None = None
        self.train_set: CachedDataset | None = None
        self.val_set: CachedDataset | None = None
        self.twin_sources: list[Source] | None = None  # guide=twins (``pair``)

    def bind(self, backbone, a: torch.Tensor, plan: EditPlan, guard: Guard = UNGUARDED) -> AsyrpDataModule:
        """The inversion cache of ``plan`` (its inversion part) for this backbone and schedule; its build stops and
        names its work through ``guard`` (asyrp/ops/guard.py).

        With a validation set and a t_edit, the training entries stop the unedited walk at t_edit (training reads
        P_t^orig there and above only); the validation images, whose x_rec validation and the edit grids show, get
        full entries. Without a validation set every entry is full (the grids then show training images), and so is
        every entry of seeded noise (its x0 is the end of the walk)."""
        kw = dict(image_size=self.image_size, batch_size=self.cache_batch_size, dtype=self.cache_dtype, guard=guard)
        self.full_cache = InversionCache(self.cache_dir, backbone, a, plan, **kw)
        self.cache, self.train_steps = self.full_cache, None
        if plan.t_edit is not None and self.n_val > 0 and self.kind == "folder":  # a noise sample's x0 needs it all
            self.cache = InversionCache(self.cache_dir, backbone, a, plan, walk_to=plan.t_edit, **kw)
            self.train_steps = len(plan.edit_steps())
        return self

    def sources(self) -> list[Source]:
        if self.kind == "folder":
            return image_sources(self.path, self.n_images)
        return noise_sources(self.seed, self.n_images)

    def pair(self, twin_files: list[Path]) -> AsyrpDataModule:
        """guide=twins (asyrp.twins): the twin of each training image, in the order of ``sources``; the training
        cache inverts them on the training plan, and each training item carries its twin's P_t^orig as P_twin."""
        if self.kind != "folder" or len(twin_files) != len(self.sources()):
            raise ValueError("twins pair the images of a folder dataset one to one (asyrp.twins.pair_files)")
        self.twin_sources = [Source(id=p.name, path=Path(p)) for p in twin_files]
        return self

    def _need_cache(self) -> InversionCache:
        if self.cache is None:
            raise RuntimeError("AsyrpDataModule.bind(backbone, a, ...) must be called before use")
        return self.cache

    def prepare_data(self) -> None:
        sources = self.sources()
        if self._need_cache() is not self.full_cache:  # the validation images first: the training build finds them
            self.full_cache.build(sources[: self.n_val])
        self.cache.build(sources)
        if self.twin_sources is not None:
            self.cache.build(self.twin_sources)

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is None:
            self._need_cache()
            sources = self.sources()
            twins = self.cache.paths(self.twin_sources) if self.twin_sources is not None else None
            self.train_set = CachedDataset(self.cache.paths(sources), self.in_memory, self.train_steps, twins)
            self.val_set = CachedDataset(self.full_cache.paths(sources[: max(self.n_val, 0)]), self.in_memory)

    def _batches_done(self) -> int:
        trainer = self.trainer
        return int(trainer.fit_loop.epoch_loop.batch_progress.current.processed) if trainer is not None else 0

    def _shard(self, ds: Dataset, shuffle: bool) -> DistributedSampler | None:
        """Per-rank shard (rank r takes items r, r + N, ...), or None in a single process. The trainer configs set
        use_distributed_sampler=false: this sampler is built here, explicitly, with the dataset's own order."""
        trainer = self.trainer
        if trainer is None or trainer.world_size <= 1:
            return None
        return DistributedSampler(
            ds, num_replicas=trainer.world_size, rank=trainer.global_rank, shuffle=shuffle, seed=self.seed
        )

    def train_dataloader(self) -> DataLoader:
        sampler = self._shard(self.train_set, self.shuffle)
        shuffle = self.shuffle and sampler is None
        g = torch.Generator().manual_seed(self.seed) if shuffle else None
        return ResumableDataLoader(
            self.train_set,
            batch_size=self.batch_size,
            shuffle=shuffle,
            sampler=sampler,
            generator=g,
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
            persistent_workers=self.num_workers > 0,
            progress=self._batches_done,
        )

    def val_dataloader(self) -> DataLoader:
        return DataLoader(
            self.val_set,
            batch_size=self.batch_size,
            sampler=self._shard(self.val_set, False),
            num_workers=self.num_workers,
            pin_memory=self.pin_memory,
        )
