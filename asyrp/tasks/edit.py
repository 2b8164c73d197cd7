"""The edit task (edit.py, conf/edit.yaml): ``edit(cfg) -> dict`` edits a folder of images (or N random samples)
with one or more trained (or official) h-functions and writes PNGs, grid.png and manifest.json.

The request (asyrp.tasks.edit_request: inputs, plan, coefficient matrix, fingerprint) is built before any network
loads; ``EditLoop`` runs it: loads the networks, inverts through the inversion cache when ``cache_dir`` is set,
edits in batches (a device out of memory retries a batch at half size, once), writes and journals each image as it is
finished (asyrp.tasks.edit_done) and draws the grid. ``devices=N`` runs N loops, one process per device
(asyrp.tasks.edit_ranks); the images are the same bytes as one process's.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from ..checks import check_edit_config, check_perf
from ..ops import faults
from ..ops.claims import MANIFEST, claim_edit_dir, holds_claims
from ..ops.guard import UNGUARDED, Guard
from .edit_done import close_journals, done_images, record_done
from .edit_ranks import edit_batches, rank_devices, run_ranks
from .edit_request import EditRequest, edit_request

log = logging.getLogger(__name__)


@holds_claims  # output_dir is this run's until edit returns
def edit(cfg: DictConfig) -> dict[str, Any]:
    """Edit images (a folder or glob, or N random samples) with one or more h-functions; see conf/edit.yaml.

    Order: the config is checked, the images are scanned (unusable ones skipped and reported), the h-function files
    are read and the output folder claimed before any network is loaded. Outputs (per-image PNGs, grid.png,
    manifest.json) are written atomically, image by image, each finished image journalled with its files' digests
    (asyrp/tasks/edit_done.py): a rerun with the same settings completes only the images not verifiably done;
    another run's outputs in ``output_dir`` are never overwritten unless ``overwrite=true``. ``devices=N``: N
    processes, one per device, write the same files as one (asyrp/tasks/edit_ranks.py).
    """
    from ..ops import secrets
    from ..ops.io import atomic_write_json

    ckpts = check_edit_config(cfg)
    secrets.install_log_filter()
    req = edit_request(cfg, ckpts)
    devices = rank_devices(cfg)
    out = Path(str(cfg.output_dir)).expanduser()
    faults.check_writable(out, "output_dir")  # a read-only or foreign folder fails here, before any network
    faults.set_resume(f"rerun the same command with output_dir={out}: it edits only the images not done yet")
    # claim the output folder: same settings -> resume, another run's outputs -> refuse unless overwrite=true
    done = done_images(req, out) if claim_edit_dir(out, req.fingerprint, bool(cfg.get("overwrite", False))) else {}
    todo = [it for it in req.inputs if it["id"] not in done]
    if done:
        log.info(
            "%s: %d of %d images already done with these settings, editing the other %d",
            out,
            len(done),
            len(req.inputs),
            len(todo),
        )
    loop = EditLoop(req, out, faults.GUARD) if len(devices) == 1 else None  # else the ranks load their own
    if loop is not None:
        loop.done = dict(done)
        loop.load_networks()  # before anything is written
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(req.manifest(False, done), out / MANIFEST)
    batches = edit_batches(req.inputs, done, int(cfg.get("batch_size", 4)))
    try:
        if loop is not None:
            loop.run(batches)
            size = loop.size
        else:
            size = run_ranks(EditLoop, req, out, batches, done, devices, faults.GUARD) if batches else req.image_size
        write_edit_grid(req, out, size)
    except BaseException:
        with contextlib.suppress(OSError):  # a full disk: the journals stay, and the rerun reads them
            close_journals(req, out, complete=False)  # the manifest lists every image finished
        raise
    close_journals(req, out, complete=True)
    return _result(req, out, todo)


def _result(req: EditRequest, out: Path, todo: list[dict[str, Any]]) -> dict[str, Any]:
    log.info(
        "edited %d images (%d already done, %d files skipped, reasons in manifest.json) -> %s",
        len(todo),
        len(req.inputs) - len(todo),
        len(req.skipped),
        out,
    )
    p = req.plan
    return {
        "written": [out / n for it in todo for n in req.out_names(it["id"])],
        "output_dir": out,
        "manifest": out / MANIFEST,
        "t_edit": p.t_edit,
        "t_boost": p.t_boost,
        "n_gen": p.n_gen,
        "n_inv": p.n_inv,
        "plan": p,
        "done_before": len(req.inputs) - len(todo),
        "edited": len(todo),
        "skipped": [(str(f), r) for f, r in req.skipped],
        "coefficients": req.coefficients.rows,
    }


class EditLoop:
    """Runs an ``EditRequest`` into ``out``: the networks it needs, then batch after batch; ``done`` holds the images
    whose outputs are on disk, id -> {file: digest} (a resumed run starts with the earlier attempt's). ``guard``
    (asyrp/ops/guard.py): where the loop and its cache build stop, and what they are doing; ``rank``: which process
    of ``devices=N`` runs it (its journal, asyrp/tasks/edit_done.py)."""

    def __init__(self, req: EditRequest, out: Path, guard: Guard = UNGUARDED, rank: int = 0):
        self.req, self.out, self.cfg, self.guard, self.rank = req, out, req.cfg, guard, rank
        self.size = req.image_size
        self.done: dict[str, dict[str, str]] = {}

    def load_networks(self) -> None:
        """The backbone (behind the speed options), the h-function(s) and the (K, n) strengths each output uses."""
        from .. import build
        from ..constraints import constrain
        from ..hfunctions.files import hfunction_from_payload
        from ..hfunctions.modules import Composition
        from ..plan import in_own_intervals

        req, cfg = self.req, self.cfg
        torch.manual_seed(req.seed)  # random test backbones (checkpoint: null) come out the same every run
        self.perf = check_perf(cfg.get("perf"))
        # speed options: auto = on when the backbone is on CUDA (off on CPU)
        self.backbone = build.backbone(cfg.arch, device=cfg.get("device") or "cpu", perf=self.perf)
        self.size = int(self.backbone.image_size)
        self.dev = next(self.backbone.parameters()).device
        fns = [
            hfunction_from_payload(p, c, self.backbone, cfg.arch.get("name"))[0]
            for p, c in zip(req.payloads, req.checkpoints)
        ]
        fns = [constrain(f, cfg.get("constraint"), self.backbone, arch_name=cfg.arch.get("name")) for f in fns]
        c = req.coefficients.matrix
        if req.windows:  # each function in its own interval, at its trained effect per unit of t
            fns = in_own_intervals(fns, req.windows)
            c = c * torch.tensor([w["step_scale"] for w in req.windows], dtype=c.dtype)
        self.hfunc = fns[0] if len(fns) == 1 else Composition(fns).to(self.dev)
        self.a = build.alpha_bar(cfg.arch)
        # (K, n): K outputs per image from one inversion; random inputs also give the unedited sample (row 0)
        self.coeffs = torch.cat([c.new_zeros(1, c.shape[1]), c]) if req.random_inputs else c

    def _x_T_cache(self, todo: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        """cache_dir set: each image is inverted once across runs (sweep trials) through the inversion cache."""
        if not self.cfg.get("cache_dir") or self.req.random_inputs or not todo:
            return {}
        from ..data.cache import cached_inversions

        entries = cached_inversions(
            str(self.cfg.cache_dir),
            self.backbone,
            self.a,
            [Path(it["source"]) for it in todo],
            self.req.plan,
            image_size=self.size,
            batch_size=int(self.cfg.get("batch_size", 4)),
            guard=self.guard,
            walk_to=None,  # an edit starts from x_T: the unedited walk of the entry would be computed for nothing
        )
        return {it["id"]: e["x_T"] for it, e in zip(todo, entries)}

    def _batch_start(self, batch: list[dict[str, Any]], x_T_cached: dict[str, torch.Tensor]):
        """(x0, x_T) of a batch: the images (notes on what reading did go to the manifest), or seeded noise."""
        from ..data.images import read_image

        if self.req.random_inputs:
            shape = (int(getattr(self.backbone, "in_channels", 3)), self.size, self.size)
            return None, torch.stack(
                [torch.randn(shape, generator=torch.Generator().manual_seed(10_000_019 + it["seed"])) for it in batch]
            ).to(self.dev)
        loaded = [read_image(it["source"], self.size) for it in batch]
        for it, (_, notes) in zip(batch, loaded):
            if notes:
                it["notes"] = notes
        x_T = torch.stack([x_T_cached[it["id"]] for it in batch]).to(self.dev) if x_T_cached else None
        return torch.stack([x for x, _ in loaded]).to(self.dev), x_T

    def _edit_batch(self, batch: list[dict[str, Any]], x_T_cached: dict[str, torch.Tensor]) -> torch.Tensor:
        """The edited images of a batch, (K, B, C, H, W)."""
        from ..perf import inference_context
        from ..samplers import edit as asyrp_edit

        x0, x_T = self._batch_start(batch, x_T_cached)
        regions = self._regions(batch)
        with inference_context(self.perf, self.dev):  # inference_mode (auto: on CUDA) or no_grad
            return asyrp_edit(
                self.backbone,
                x0,
                self.hfunc,
                a=self.a.to(self.dev),
                plan=self.req.plan,
                strength=self.coeffs,
                seeds=[it["seed"] for it in batch],
                x_T=x_T,
                regions=regions,
            ).x_edit

    def _regions(self, batch: list[dict[str, Any]]) -> torch.Tensor | None:
        """masks=: the batch's masks, (B, m, H, W) (m folders), checked against the edited size; else None."""
        from ..masks import read_mask

        if "masks" not in batch[0]:
            return None
        rows = [torch.stack([read_mask(m, self.size)["mask"] for m in it["masks"]]) for it in batch]
        return torch.stack(rows).to(self.dev)

    def _write(self, batch: list[dict[str, Any]], x_edit: torch.Tensor) -> list[Path]:
        """The batch's images not done yet on disk, each journalled once its PNGs are written: a kill from here on
        loses at most the image being written. A finished image in the batch (an earlier attempt's) is kept as is:
        the batch was edited whole only so that every image comes out of the same batch as in one uninterrupted run."""
        from ..ops.io import atomic_write_png

        written = []
        for b, it in enumerate(batch):
            if it["id"] in self.done:
                continue
            paths = [atomic_write_png(x_edit[k, b], self.out / n) for k, n in enumerate(self.req.out_names(it["id"]))]
            self.done[it["id"]] = record_done(self.out, self.rank, self.req.fingerprint, it["id"], paths)
            written += paths
        return written

    def run(self, batches: list[list[dict[str, Any]]]) -> list[Path]:
        """Edit ``batches`` (asyrp.tasks.edit_ranks.edit_batches: the fixed cut of the inputs); every finished image is
        on disk and journalled before the next batch. Ctrl-C / SIGTERM stop between batches; a device out of memory
        retries the batch at half size, once, and keeps the half size (batches cut again: float rounding may differ)."""
        from ..ops.progress import Progress

        bs, written, halved, i, j = int(self.cfg.get("batch_size", 4)), [], False, 0, 0
        queue = [b for b in batches if any(it["id"] not in self.done for it in b)]
        items = [it for b in queue for it in b]
        x_T_cached = self._x_T_cache(items)
        n_todo = sum(it["id"] not in self.done for it in items)
        bar = Progress(n_todo, "edit", "img", enabled=bool(self.cfg.get("progress", True)))  # or lines in a log
        try:
            while j < len(queue):
                self.guard.stop(
                    f"{len(self.done)} of {len(self.req.inputs)} images are finished in {self.out} "
                    "(manifest.json lists them)"
                )
                batch = queue[j]
                what = f"editing images {i + 1}-{i + len(batch)} of the {len(items)} to do" + (
                    " (retried at half the batch size)" if halved else ""
                )
                if all(it["id"] in self.done for it in batch):  # a finished half of a batch cut again
                    i, j = i + len(batch), j + 1
                    continue
                try:
                    with self.guard.doing(what, "batch_size", bs):
                        x_edit = self._edit_batch(batch, x_T_cached)
                except torch.OutOfMemoryError:  # what CUDA raises (torch's CPU allocator raises RuntimeError)
                    if halved or bs == 1:
                        raise  # one line: out of memory, which batch_size to lower
                    halved, bs = True, max(1, bs // 2)
                    queue[j:] = [b[k : k + bs] for b in queue[j:] for k in range(0, len(b), bs)]
                    if self.dev.type == "cuda":
                        torch.cuda.empty_cache()
                    log.warning(
                        "out of memory on %s %s: retrying at batch_size=%d (once; pass batch_size=%d to start there)",
                        self.dev,
                        what,
                        bs,
                        bs,
                    )
                    continue
                new = self._write(batch, x_edit)
                written += new
                bar.update(len(new) // max(1, len(self.req.out_names(batch[0]["id"]))))
                i, j = i + len(batch), j + 1
        finally:
            bar.close()
        return written


def write_edit_grid(req: EditRequest, out: Path, size: int) -> None:
    """grid.png: the first grid_rows inputs as named rows; columns: the input, then every output labelled with
    its attribute(s) and strength (asyrp.grid: cells upscaled to >= 128 px)."""
    from ..data.images import read_image
    from ..grid import columns_grid, save_grid, strength_label

    cfg = req.cfg
    n_rows = min(int(cfg.get("grid_rows", 16)), len(req.inputs))
    if n_rows <= 0:
        return
    strip = cfg.get("strip") is not None  # strip columns: also how far along the strip
    heads = ["sample (unedited)"] if req.random_inputs else ["input"]
    heads += [
        strength_label(req.names(), r) + (f" (strip {lab})" if strip else "")
        for r, lab in zip(req.coefficients.rows, req.coefficients.labels)
    ]
    cols: list[list[torch.Tensor]] = [[] for _ in heads]
    for it in req.inputs[:n_rows]:
        cells = [] if req.random_inputs else [read_image(it["source"], size)[0]]
        cells += [read_image(out / n, size)[0] for n in req.out_names(it["id"])]
        for col, x in zip(cols, cells):
            col.append(x)
    p = req.plan
    title = (
        f"edit.py: {', '.join(c.name for c in req.checkpoints)} on {cfg.arch.get('name')}; rows: inputs, "
        f"columns: input and edits (attribute x strength); t_edit={p.t_edit}, t_boost={p.t_boost}, "
        f"n_gen={p.n_gen}"
    )
    save_grid(
        out / "grid.png",
        columns_grid(list(zip(heads, map(torch.stack, cols))), [it["id"] for it in req.inputs[:n_rows]], title),
    )
