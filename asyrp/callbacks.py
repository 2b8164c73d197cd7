"""Training callbacks: edit grids to look at, and an h-function checkpoint that edit.py can load on its own.

``HFunctionCheckpoint`` writes only what editing needs: the h-function's state dict plus the config to rebuild it
(hfunction cfg, arch, h_shape, emb_dim, attribute, t_edit, ...), all plain types (loads with weights_only=True).
Optionally also the official layout ``{"0": state_dict}`` that ``asyrp.hfunctions.load_official_hfunction`` reads.
Lightning's own ``last.ckpt`` (ModelCheckpoint) is for resuming; it too holds only the h-function's weights.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar
from pytorch_lightning.utilities import rank_zero_only

from .hfunctions.files import payload, save_hfunction
from .ops.errors import TrainingDiverged
from .ops.guard import Guard

log = logging.getLogger(__name__)

__all__ = ["HFunctionCheckpoint", "EditGrid", "FiniteGuard", "ProgressLog", "StopOnSignal", "hfunction_payload"]


def _all_finite(module: torch.nn.Module) -> bool:
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def hfunction_payload(pl_module) -> dict[str, Any]:
    return payload(pl_module.hfunc, pl_module.rebuild_info())


class HFunctionCheckpoint(pl.Callback):
    """Save ``hfunction.pt`` (and ``hfunction_official.pth``) at the end of every epoch and of training."""

    def __init__(
        self,
        dirpath: str,
        filename: str = "hfunction.pt",
        export_official: bool = True,
        official_filename: str = "hfunction_official.pth",
    ):
        self.dirpath = Path(dirpath)
        self.filename, self.export_official, self.official_filename = filename, export_official, official_filename

    @rank_zero_only
    def _save(self, pl_module) -> None:
        if not _all_finite(pl_module.hfunc):  # never replace a good hfunction.pt by a diverged one
            log.error("h-function weights are not finite: %s not written", self.dirpath / self.filename)
            return
        save_hfunction(
            hfunction_payload(pl_module),
            self.dirpath / self.filename,
            self.dirpath / self.official_filename if self.export_official else None,
        )

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        self._save(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        self._save(pl_module)


class EditGrid(pl.Callback):
    """Every ``every_n_steps`` optimiser steps (and at the end), edit a few cached images with the current
    h-function and save a labelled grid (columns: source | reconstruction | edit with its attribute and strength; one
    row per image) as PNG, and the same PNG to W&B if that logger is used."""

    def __init__(self, dirpath: str, every_n_steps: int = 200, n_images: int = 4, at_train_end: bool = True):
        self.dirpath = Path(dirpath)
        self.every_n_steps, self.n_images, self.at_train_end = int(every_n_steps), int(n_images), at_train_end
        self._last_step = 0
        self.saved: list[Path] = []

    def _batch(self, trainer, pl_module) -> dict[str, torch.Tensor] | None:
        dm = trainer.datamodule
        ds = getattr(dm, "val_set", None) or getattr(dm, "train_set", None)
        if ds is None or len(ds) == 0:
            return None
        items = [ds[i] for i in range(min(self.n_images, len(ds)))]
        return {
            k: (
                torch.stack([it[k] for it in items]).to(pl_module.device)
                if torch.is_tensor(items[0][k])
                else torch.tensor([it[k] for it in items])
            )
            for k in items[0]
        }

    @rank_zero_only
    def _make(self, trainer, pl_module, tag: str) -> None:
        batch = self._batch(trainer, pl_module)
        if batch is None:
            return
        was_training = pl_module.training
        pl_module.eval()
        try:
            x_edit = pl_module.edit_batch(batch)
        finally:
            pl_module.train(was_training)
        from .grid import columns_grid, save_grid, strength_label

        info = pl_module.rebuild_info()
        name = (info.get("attribute") or {}).get("name") or "edit"
        target = "; ".join(getattr(pl_module, "target", []) or [])
        title = (
            f"step {trainer.global_step}: {name} ('{target}'), strength {pl_module.strength:g}, t_edit "
            f"{pl_module.plan.t_edit}; columns: source, reconstruction (no edit), edit"
        )
        grid = columns_grid(
            [
                ("source", batch["x0"]),
                ("reconstruction", batch["x_rec"]),
                (f"edit: {strength_label([name], [pl_module.strength])}", x_edit),
            ],
            [f"image {int(i)}" for i in batch["index"]],
            title,
        )
        path = save_grid(self.dirpath / f"{tag}.png", grid)
        self.saved.append(path)
        for lg in trainer.loggers:
            if isinstance(lg, pl.loggers.WandbLogger):
                lg.log_image(key="edit_grid", images=[str(path)], step=trainer.global_step, caption=[title])

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step = trainer.global_step
        if (
            self.every_n_steps > 0
            and step // self.every_n_steps > self._last_step // self.every_n_steps
            and step != self._last_step
        ):
            self._last_step = step
            self._make(trainer, pl_module, f"step_{step:07d}")

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_train_end:
            self._make(trainer, pl_module, "final")


class FiniteGuard(pl.Callback):
    """Stop the run at the first batch whose loss (any logged ``train/*`` step value) or h-function weights are
    NaN/inf, raising ``TrainingDiverged`` before any checkpoint of that state is written.

    Lightning runs checkpoint callbacks after all others, so ``last.ckpt`` (and ``hfunction.pt``) keep the last good
    state. The decision is the same on every DDP rank (synchronised loss, all-reduced weights).
    """

    def __init__(self, check_weights: bool = True):
        self.check_weights = check_weights

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        bad = None
        for k, v in trainer.callback_metrics.items():
            if k.startswith("train/") and k != "train/lr" and not k.endswith("_epoch"):
                val = float(v)
                if not math.isfinite(val):
                    bad = f"{k}={val}"
                    break
        if bad is None and self.check_weights and not _all_finite(pl_module.hfunc):
            bad = "the h-function weights are NaN/inf"
        if bad is None:
            return
        ckpt = trainer.checkpoint_callback
        last = Path(ckpt.dirpath) / "last.ckpt" if ckpt is not None and ckpt.dirpath else None
        step = getattr(ckpt, "_last_global_step_saved", None) if ckpt is not None else None
        keep = (
            f"the last good checkpoint is {last} (step {step}); resume from it with ckpt_path={last}"
            if last is not None and last.is_file()
            else "no checkpoint was written before it"
        )
        lr = trainer.optimizers[0].param_groups[0]["lr"] if trainer.optimizers else "?"
        raise TrainingDiverged(
            f"training diverged at step {trainer.global_step} (epoch {trainer.current_epoch}, batch {batch_idx}): "
            f"{bad}. The run stopped without saving this state; {keep} after lowering model.optimizer.lr "
            f"(now {lr}) or model.loss weights"
        )


class StopOnSignal(pl.Callback):
    """Ctrl-C / SIGTERM during training, through the ``guard`` the task hands it (asyrp/ops/guard.py; under run_cli
    ``asyrp.ops.faults.GUARD``): at the end of the running batch, write last.ckpt
    (the same mid-epoch checkpoint ModelCheckpoint writes, which a rerun resumes from exactly) and raise
    ``Interrupted``; the entry point prints one line and exits 130 / 143. The last batch of an epoch is not a stop:
    a run resumed after it would skip the epoch's validation and epoch-end files, so the stop comes one batch
    later (or training simply ends); validation is not cut either. A second signal stops at once."""

    def __init__(self, guard: Guard):
        self.guard = guard

    def on_train_start(self, trainer, pl_module) -> None:
        # one process: SIGTERM is ours alone. Lightning's own handler would stop right after the batch it came in,
        # without a checkpoint of that batch when it came after this callback ran (DDP keeps Lightning's, which
        # tells the other ranks)
        if trainer.world_size == 1 and not self.guard.stop_asked():
            self.guard.take_signals()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not self.guard.stop_asked():
            return
        if trainer.fit_loop.epoch_loop.batch_progress.is_last_batch:
            return  # let the epoch end (validation, epoch-end checkpoints): a resume would skip them
        ckpt = trainer.checkpoint_callback
        done = "no checkpoint could be written (no ModelCheckpoint callback)"
        if ckpt is not None and ckpt.dirpath and _all_finite(pl_module.hfunc):
            last = Path(ckpt.dirpath) / "last.ckpt"
            trainer.save_checkpoint(last, weights_only=False)  # optimiser and loop state too: it resumes
            done = f"{last} holds step {trainer.global_step}"
        self.guard.stop(done)


class ProgressLog(TQDMProgressBar):
    """Lightning's bar on a terminal; in a log file or pipe, a line every few seconds instead (asyrp.ops.progress):
    the batch and epoch, the optimiser step, the rate, the ETA and the training loss, so ``make demo 2>&1 | cat``
    shows what training is doing."""

    def __init__(self, every: float | None = None):
        from .ops.progress import modes

        super().__init__()
        bar, self.lines = modes()
        if not bar:
            self.disable()
        self.every = every
        self._ticker = None

    def on_train_start(self, trainer, pl_module) -> None:
        super().on_train_start(trainer, pl_module)
        if self.lines and trainer.is_global_zero:
            from .ops.progress import LineTicker

            per_epoch = self.total_train_batches
            epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
            total = per_epoch * epochs if epochs and per_epoch and math.isfinite(per_epoch) else None
            self._ticker = LineTicker(total, "train", "batch", self.every)
            self._ticker.n = int(trainer.current_epoch * (per_epoch or 0))  # a resumed run starts where it was

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self._ticker is not None:
            per_epoch = self.total_train_batches if math.isfinite(self.total_train_batches) else 0
            # the key metrics only: the training loss and the validation scores (not every logged term)
            metrics = {
                k: v
                for k, v in self.get_metrics(trainer, pl_module).items()
                if not k.endswith("_epoch") and ("loss" in k or k.startswith("val/"))
            }
            self._ticker.set(
                trainer.current_epoch * per_epoch + batch_idx + 1,
                {"epoch": f"{trainer.current_epoch + 1}/{trainer.max_epochs}", "step": trainer.global_step, **metrics},
            )

    def on_train_end(self, trainer, pl_module) -> None:
        super().on_train_end(trainer, pl_module)
        if self._ticker is not None:
            self._ticker.close()
            self._ticker = None

    def on_exception(self, trainer, pl_module, exception) -> None:
        if self._ticker is not None:  # its last line says where training stopped
            self._ticker.close()
            self._ticker = None
