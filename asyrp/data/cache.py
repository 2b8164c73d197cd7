"""The DDIM inversion cache: everything about an image that does not depend on the h-function, computed once.

Per image the cache holds x0, x_T (deterministic DDIM inversion with n_inv steps, the official ``precompute_pairs``),
the unedited generation from x_T with n_gen steps: P_t^orig at every generation step (``t``, descending) and its
end point x_rec (the reconstruction). The full entry stores P_t^orig for *all* generation steps, so it serves every
t_edit of a sweep; a training entry (below: ``walk_to``) serves its t_edit and every higher one.

Training walks the *edited* trajectory from the cached x_T (as the official ``run_training`` does: x_t is the
Asyrp-edited walk, detached each step) and compares P_t^edit with the cached P_t^orig of the *unedited* DDIM walk,
which is exactly the official reference (there it is recomputed with a second network pass every step and epoch;
here it is read from disk). The edited x_t cannot be cached because it depends on the h-function being trained.

Readers that need less of the walk get entries that stop where their need stops (``walk_to``; image files only, a
noise sample's x0 is its walk's end point): ``walk_to=None`` (an edit from x_T) holds x0 and x_T alone (39 of the 79
passes per image at n_inv = n_gen = 40), ``<digest>.x_T.pt``; ``walk_to=t`` (training, t = t_edit) holds P_t^orig at
the steps at t and above and no x_rec, ``<digest>.to<t>.pt``. The full entry ``<digest>.pt`` serves every reader;
what a shorter entry holds is the same tensors the full one does (the same calls, the walk cut after its first steps).

Entries are keyed by a digest of (backbone weights, alpha schedule, n_inv, n_gen, t0, spacing) for the folder and of
(image file content, image size) or (seed, index, shape) per item, written atomically (tmp + os.replace), one file
per item, so runs and sweep trials share them and adding images only computes the new ones. Concurrent builders
of one cache folder take turns on its lock (``build``; asyrp.ops.locks), so each entry is computed and written once.
Between batches the build calls the ``guard`` its task handed it (asyrp/ops/guard.py): Ctrl-C under ``run_cli``
stops there, with every entry written so far complete.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from ..ddim import WalkStep, ddim_invert, ddim_walk
from ..ops import locks
from ..ops.errors import AsyrpUserError
from ..ops.guard import UNGUARDED, Guard
from ..ops.io import atomic_save, file_digest, module_fingerprint, tensor_digest
from ..ops.progress import Progress
from ..plan import EditPlan, generation_pairs
from .images import list_images, load_image

log = logging.getLogger(__name__)

CACHE_VERSION = 1
CacheEntry = dict  # {"x0", "x_T", "x_rec": (3,H,W), "P_orig": (K,3,H,W), "t": (K,), "id": str} (see walk_to)
X_T_ONLY = ".x_T.pt"  # the file ending of an entry without the walk (walk_to=None)


@dataclass(frozen=True)
class Source:
    """One training item: an image file, or seeded noise x_T ~ N(0, I) whose x0 the backbone generates."""

    id: str
    path: Path | None = None
    seed: int | None = None
    index: int = 0

    def digest(self, shape: tuple[int, int, int]) -> str:
        if self.path is not None:
            return hashlib.blake2b(f"img|{file_digest(self.path)}|{shape}".encode(), digest_size=16).hexdigest()
        return hashlib.blake2b(f"noise|{self.seed}|{self.index}|{shape}".encode(), digest_size=16).hexdigest()

    def noise(self, shape: tuple[int, int, int]) -> torch.Tensor:
        g = torch.Generator().manual_seed(int(self.seed) * 1_000_003 + self.index)
        return torch.randn((1, *shape), generator=g)


def image_sources(folder: str | Path, n_images: int | None) -> list[Source]:
    return [Source(id=p.name, path=p) for p in list_images(folder, n_images)]


def noise_sources(seed: int, n_images: int) -> list[Source]:
    return [Source(id=f"noise_{seed}_{i:05d}", seed=seed, index=i) for i in range(n_images)]


class InversionCache:
    """Builds and finds cache entries for one backbone/schedule/step setting (see the module docstring)."""

    def __init__(
        self,
        root: str | Path,
        backbone,
        a: torch.Tensor,
        plan: EditPlan,
        *,
        image_size: int | None = None,
        batch_size: int = 4,
        dtype: torch.dtype = torch.float32,
        guard: Guard = UNGUARDED,
        walk_to: int | None = 0,
    ):
        self.backbone = backbone
        # how far down new image entries record the unedited walk: 0 all of it and x_rec, t > 0 the steps at t and
        # above (no x_rec), None not at all (x0 and x_T)
        self.walk_to = None if walk_to is None else max(int(walk_to), 0)
        self.guard = guard
        self.a = a
        # keyed on and walking the plan's inversion part only: one cache serves every t_edit, t_boost and mode
        self.plan = p = plan.inversion_part()
        self.image_size = int(image_size or backbone.image_size)
        self.shape = (int(backbone.in_channels), self.image_size, self.image_size)
        self.batch_size = max(int(batch_size), 1)
        self.dtype = dtype
        spec = "|".join(
            map(
                str,
                (
                    CACHE_VERSION,
                    module_fingerprint(backbone),
                    tensor_digest(a),
                    p.n_inv,
                    p.n_gen,
                    p.t0,
                    p.spacing,
                    self.shape,
                ),
            )
        )
        self.spec = hashlib.blake2b(spec.encode(), digest_size=8).hexdigest()
        self.dir = Path(root).expanduser() / self.spec

    def path_for(self, source: Source) -> Path:
        """Where the full entry (with the walk) of ``source`` is."""
        return self.dir / f"{source.digest(self.shape)}.pt"

    def _target(self, source: Source) -> Path:
        """Where a build writes: the file of this reader's kind (seeded noise: the full entry, x0 is its walk's end)."""
        if self.walk_to == 0 or source.path is None:
            return self.path_for(source)
        tail = X_T_ONLY if self.walk_to is None else f".to{self.walk_to}.pt"
        return self.dir / f"{source.digest(self.shape)}{tail}"

    def _found(self, source: Source) -> Path | None:
        """The entry that serves this reader: the full one, else one that walked at least as far down (x_T alone
        serves walk_to=None); None if neither."""
        full = self.path_for(source)
        if full.is_file() or self.walk_to == 0:
            return full if full.is_file() else None
        parts = {_walked_to(p): p for p in self.dir.glob(f"{full.stem}.*.pt")}
        deep_enough = [t for t in parts if t is not None and (self.walk_to is None or t <= self.walk_to)]
        if deep_enough:
            return parts[max(deep_enough)]
        return parts.get(None) if self.walk_to is None else None

    def missing(self, sources: Sequence[Source]) -> list[Source]:
        return [s for s in sources if self._found(s) is None]

    # -- building ----------------------------------------------------------------------------------------------
    @torch.no_grad()
    def _walk(
        self, x_T: torch.Tensor, seq: list[int], down_to: int = 0
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[int]]:
        """Unedited deterministic DDIM generation from x_T down ``seq`` (its steps at ``down_to`` and above): the end
        point and P_t at each step."""
        steps: list[WalkStep] = []
        pairs = [(t, t_next) for t, t_next in generation_pairs(seq) if t >= down_to]
        x = ddim_walk(self.backbone, x_T, pairs, self.a, callback=steps.append)
        return x, [s.P_t for s in steps], [s.t for s in steps]

    @torch.no_grad()
    def compute(self, sources: Sequence[Source], x0: torch.Tensor | None) -> list[CacheEntry]:
        """The entries of ``sources`` in memory (x0 given: real images, inverted; None: seeded noise samples)."""
        dev = next(self.backbone.parameters()).device
        cast = lambda v: v.detach().to("cpu", self.dtype).contiguous()  # noqa: E731
        whole = x0 is None or self.walk_to == 0  # the walk to its end, x_rec included
        if x0 is not None:  # real images: invert, then regenerate without edit (down to walk_to)
            x0 = x0.to(dev)
            x_T = ddim_invert(self.backbone, x0, self.plan.seq_inv, self.a)
            if self.walk_to is None:
                return [{"id": s.id, "x0": cast(x0[i]), "x_T": cast(x_T[i])} for i, s in enumerate(sources)]
            x_rec, Ps, ts = self._walk(x_T, self.plan.seq_gen, self.walk_to)
        else:  # random samples: x0 is the model's own DDIM sample from x_T (official: n_inv steps)
            x_T = torch.cat([s.noise(self.shape) for s in sources]).to(dev)
            x_rec, Ps, ts = self._walk(x_T, self.plan.seq_gen)
            x0 = x_rec if self.plan.n_inv == self.plan.n_gen else self._walk(x_T, self.plan.seq_inv)[0]
        P = torch.stack(Ps, 1)
        return [
            {
                "id": s.id,
                "x0": cast(x0[i]),
                "x_T": cast(x_T[i]),
                **({"x_rec": cast(x_rec[i])} if whole else {}),
                "P_orig": cast(P[i]),
                "t": torch.tensor(ts, dtype=torch.long),
            }
            for i, s in enumerate(sources)
        ]

    def build(self, sources: Sequence[Source]) -> list[Path]:
        """Compute the entries that are not on disk yet; return the paths of all ``sources`` in order.

        Builders of one cache folder (two trainings on the same images, parallel sweep trials) take turns on its
        lock and look again for what is missing once they hold it: each entry is computed and written once."""
        todo = self.missing(sources)
        if todo:
            # read every image first: a corrupt file fails before any network pass, lock or write
            imgs = {s.id: load_image(s.path, self.image_size) for s in todo if s.path is not None}
            with locks.acquire(self.dir / ".lock", {"task": "inversion cache"}, wait=True, on_wait=self._waiting):
                self._build(self.missing(todo), imgs, len(sources))
        return [self._found(s) for s in sources]

    def _waiting(self, holder: dict) -> None:
        log.info(
            "inversion cache %s: waiting for another process that builds it (%s)", self.dir, locks.describe(holder)
        )

    def _build(self, todo: Sequence[Source], imgs: dict[str, torch.Tensor], n_total: int) -> None:
        if not todo:
            return
        log.info("inversion cache %s: computing %d of %d entries", self.dir, len(todo), n_total)
        with Progress(len(todo), "inversion cache", "img") as bar:  # a bar, or timed lines in a log/pipe
            for i in range(0, len(todo), self.batch_size):
                # Ctrl-C / SIGTERM: stop between batches; every entry written is complete and is reused
                self.guard.stop(
                    f"{i} of the {len(todo)} new inversion-cache entries are in {self.dir} (kept for the next run)"
                )
                chunk = todo[i : i + self.batch_size]
                x0 = torch.stack([imgs[s.id] for s in chunk]) if chunk[0].path is not None else None
                with self.guard.doing(
                    f"building the inversion cache (entries {i + 1}-{i + len(chunk)} of {len(todo)}, in {self.dir})"
                ):
                    for s, entry in zip(chunk, self.compute(chunk, x0)):
                        atomic_save(entry, self._target(s))
                bar.update(len(chunk))

    def paths(self, sources: Sequence[Source]) -> list[Path]:
        """Paths of entries that must already exist (after ``build``)."""
        missing = self.missing(sources)
        if missing:
            raise AsyrpUserError(
                f"{len(missing)} inversion-cache entries are missing under {self.dir} (first: {missing[0].id}); "
                "the cache is built in DataModule.prepare_data: call it (or trainer.fit) first."
            )
        return [self._found(s) for s in sources]


def cached_inversions(
    root: str | Path,
    backbone,
    a: torch.Tensor,
    files: Sequence[Path],
    plan: EditPlan,
    *,
    image_size: int,
    batch_size: int = 4,
    guard: Guard = UNGUARDED,
    walk_to: int | None = 0,
) -> list[CacheEntry]:
    """The cache entries of image ``files`` on ``plan``'s inversion part (computed only where missing): edits of
    images a run has inverted before (a sweep's trials, a rerun with another strength) start from the stored x_T
    instead of inverting again. ``walk_to``: how much of the unedited walk the reader needs (InversionCache)."""
    cache = InversionCache(
        root, backbone, a, plan, image_size=image_size, batch_size=batch_size, guard=guard, walk_to=walk_to
    )
    return [load_entry(p) for p in cache.build([Source(id=Path(f).name, path=Path(f)) for f in files])]


def _walked_to(path: Path) -> int | None:
    """t of an entry file that holds the walk down to t (``<digest>.to<t>.pt``); None for any other file."""
    m = re.fullmatch(r"[0-9a-f]+\.to(\d+)\.pt", path.name)
    return int(m.group(1)) if m else None


_ENTRY_KEYS = ("id", "x0", "x_T", "x_rec", "P_orig", "t")
_X_T_KEYS = ("id", "x0", "x_T")
_PART_KEYS = ("id", "x0", "x_T", "P_orig", "t")  # <digest>.to<t>.pt: the walk's first steps, no x_rec


def load_entry(path: str | Path) -> CacheEntry:
    """An entry, read safely and checked whole (every field present, one P_orig per step): entries are renamed into
    place complete, so a failure here means the disk damaged the file."""
    name = Path(path).name
    keys = _X_T_KEYS if name.endswith(X_T_ONLY) else _PART_KEYS if _walked_to(Path(path)) is not None else _ENTRY_KEYS
    try:
        entry = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(entry, dict) or any(k not in entry for k in keys):
            raise ValueError(
                f"fields {sorted(entry) if isinstance(entry, dict) else type(entry).__name__}, expected {list(keys)}"
            )
        walked = keys is not _X_T_KEYS
        if (walked and entry["P_orig"].shape[0] != entry["t"].shape[0]) or entry["x0"].shape != entry["x_T"].shape:
            raise ValueError("inconsistent shapes")
    except Exception as err:  # truncated by a disk problem: tell the user how to recover
        raise AsyrpUserError(f"inversion-cache entry {path} is unreadable ({err}); delete it to recompute.") from err
    return entry
