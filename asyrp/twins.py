"""guide=twins (issue 24): paired images as the h-function's signal, the image-pair form of Concept Sliders.

The user gives, beside the training folder (``dataset.path``, the images without the attribute), a folder of their
twins (``model.loss.guide.twins.dir``): the same images with the attribute, one file of the same name per training
image (``python -m asyrp.synthfaces.data --twins glasses`` renders them for synthfaces). Each twin is inverted on the
training plan through the same inversion cache as the training images, so at every training step t its unedited
walk gives P_t^twin. The loss adds

    w_twin * mean |P_t^edit - P_t^twin|

logged as ``guide_twin``: what the edited prediction should look like at t, target and kept attributes at once (the
twin differs from its source in the attribute alone). CLIP and the P_t^orig anchor stay as configured (an experiment
may zero them). Supervision: paired images. The gradient reaches the h-function only, through P_t^edit.

``hold_outside``: the twin's own walk is not the source's walk with the attribute added: at t 400-250 its P_t also
differs outside the attribute (synthfaces glasses, 64 pairs: mean |P_t^twin - P_t^orig| 0.03-0.05 outside the
pixels the pair differs in, 0.26-0.29 inside, and the outside is 83% of the image), and a shared f(h, t) that chases
those per-face differences moves what should be kept. With it, the target is P_t^twin inside the pair's region (the
pixels where source and twin differ by more than ``region_threshold`` in a channel, grown by ``region_dilate``
pixels) and P_t^orig outside it: the pair itself says where the attribute is, no oracle and no mask file.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .config import as_float, as_int
from .masks import change_region
from .ops.errors import AsyrpUserError

log = logging.getLogger(__name__)

KEY = "model.loss.guide.twins"
WRITE_TWINS = "python -m asyrp.synthfaces.data --twins <attribute> writes <out>/twins beside <out>/train"


def twin_settings(c: Mapping[str, Any]) -> dict[str, Any]:
    """``model.loss.guide.twins``, checked (the folder is read by ``pair_files``)."""
    w = as_float(c.get("w_twin", 1.0), f"{KEY}.w_twin")
    if w <= 0:
        raise AsyrpUserError(f"{KEY}.w_twin={c.get('w_twin')} must be > 0 (guide=none trains without twins)")
    if not c.get("dir"):
        raise AsyrpUserError(f"guide=twins needs {KEY}.dir: a folder of the training images' twins ({WRITE_TWINS})")
    hold = c.get("hold_outside", False)
    if not isinstance(hold, bool):
        raise AsyrpUserError(f"{KEY}.hold_outside={hold!r} must be true or false")
    s = {"dir": str(c["dir"]), "w_twin": w, "hold_outside": hold}
    s["region_threshold"] = as_float(c.get("region_threshold", 0.1), f"{KEY}.region_threshold")
    if not 0 < s["region_threshold"] < 2:
        raise AsyrpUserError(
            f"{KEY}.region_threshold={c.get('region_threshold')} must be in (0, 2): the per-channel difference of "
            "source and twin (images in [-1, 1]) above which a pixel belongs to the attribute's region"
        )
    s["region_dilate"] = as_int(c.get("region_dilate", 2), f"{KEY}.region_dilate", 0)
    s["w_outside"] = as_float(c.get("w_outside", 1.0), f"{KEY}.w_outside")
    if s["w_outside"] <= 0 or (s["w_outside"] != 1.0 and not hold):
        raise AsyrpUserError(
            f"{KEY}.w_outside={c.get('w_outside')}: the weight of the held outside must be > 0 and needs "
            f"{KEY}.hold_outside=true (without it there is no outside)"
        )
    return s


def pair_files(c: Mapping[str, Any], train_files: Sequence[Path], unused: list | None = None) -> list[Path]:
    """The twin of every training image (same file name in ``dir``), in the training order; one error naming the
    first unpaired image and the fix, and a log line for twins no training image uses (appended to ``unused``)."""
    folder = Path(twin_settings(c)["dir"]).expanduser()
    if not folder.is_dir():
        raise AsyrpUserError(f"{KEY}.dir={folder} is not a folder: give the folder of the twins ({WRITE_TWINS})")
    from .data.images import IMAGE_SUFFIXES

    found = {f.name: f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES}
    missing = [f.name for f in train_files if f.name not in found]
    if missing:
        raise AsyrpUserError(
            f"{KEY}.dir={folder} has no twin for {len(missing)} of the {len(train_files)} training images (first: "
            f"{missing[0]}): every image of dataset.path needs a file of the same name there ({WRITE_TWINS}), or "
            "lower dataset.n_images to the paired ones"
        )
    spare = sorted(set(found) - {f.name for f in train_files})
    if spare:
        log.info("guide=twins: %d files of %s pair with no training image and are not used (first: %s)",
                 len(spare), folder, spare[0])  # fmt: skip
    if unused is not None:
        unused.extend(found[n] for n in spare)
    return [found[f.name] for f in train_files]


def check_twins_config(guide: Mapping[str, Any] | None, train_files: Sequence[Path] | None) -> None:
    """guide=twins: its settings, an image-folder dataset, and a twin for every training image, before any network
    is loaded."""
    c = (guide or {}).get("twins")
    if c is None:
        return
    if not isinstance(c, Mapping):
        raise AsyrpUserError(f"{KEY}={c!r} must be a mapping: select it with guide=twins")
    twin_settings(c)
    if train_files is None:
        raise AsyrpUserError("guide=twins pairs the images of dataset.path: use dataset.kind=folder")
    pair_files(c, train_files)


def twin_region(x0: torch.Tensor, x0_twin: torch.Tensor, threshold: float, dilate: int) -> torch.Tensor:
    """(B, 1, H, W) in {0, 1}: where a source and its twin differ by more than ``threshold`` in some channel, grown by
    ``dilate`` pixels."""
    return change_region(x0_twin.to(x0) - x0, threshold, dilate)


@dataclass
class TwinGuide:
    """The loss term: ``term(P_edit, P_orig, t, P_twin=...) -> (weighted sum, {name: unweighted value})``;
    ``targets(batch)`` gives the P_twin of every training step (held to P_t^orig outside the region with
    ``hold_outside``)."""

    w_twin: float
    hold_outside: bool = False
    region_threshold: float = 0.1  # hold_outside's region (twin_settings checks them)
    region_dilate: int = 2
    w_outside: float = 1.0  # the held outside's weight in the L1 (the pair's region weighs 1)
    _told: bool = field(default=False, repr=False)

    def targets(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """(B, K, 3, H, W): what P_t^edit is pulled to at each of the batch's K training steps."""
        if not self.hold_outside:
            return batch["P_twin"]
        region = twin_region(batch["x0"], batch["x0_twin"], self.region_threshold, self.region_dilate)[:, None]
        if not self._told:  # once per run: how much of the image the pairs say is the attribute
            self._told = True
            share = float(region.mean())
            (log.warning if share == 0 else log.info)(
                "guide=twins hold_outside: the pairs of the first batch differ on %.1f%% of the pixels%s", 100 * share,
                "; nothing to learn: are the twins copies of their sources, or is region_threshold too high?"
                if share == 0 else "",
            )  # fmt: skip
        P_orig = batch["P_orig"].to(batch["P_twin"])
        return region * batch["P_twin"] + (1 - region) * P_orig

    def weights(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor | None:
        """(B, 1, H, W) per-pixel weights (the same at every step) of the L1 (1 inside the pair's region, ``w_outside`` outside), or None
        when every pixel weighs 1: a higher outside weight asks f to leave what the pair keeps (the skin beside hair
        colour, the mouth) alone at the price of a weaker attribute, which the edit's strength then scales back."""
        if not self.hold_outside or self.w_outside == 1.0:
            return None
        region = twin_region(batch["x0"], batch["x0_twin"], self.region_threshold, self.region_dilate)
        return region + self.w_outside * (1 - region)

    def __call__(
        self,
        P_edit: torch.Tensor,
        P_orig: torch.Tensor,
        t: Any,
        P_twin: torch.Tensor | None = None,
        weight: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, dict]:
        """``weight``: a step's slice of ``weights(batch)`` (None: every pixel weighs 1)."""
        if P_twin is None:
            raise ValueError("guide=twins needs P_twin in the batch (asyrp.data: the datamodule's twin entries)")
        if weight is None:
            value = F.l1_loss(P_edit, P_twin.to(P_edit))
        else:
            value = (weight.to(P_edit) * (P_edit - P_twin.to(P_edit)).abs()).mean()
        return self.w_twin * value, {"guide_twin": value.detach()}


def build_twin_guide(c: Mapping[str, Any]) -> TwinGuide:
    s = twin_settings(c)
    return TwinGuide(s["w_twin"], s["hold_outside"], s["region_threshold"], s["region_dilate"], s["w_outside"])


def twin_record(c: Mapping[str, Any], n_pairs: int | None = None) -> dict[str, Any]:
    """What an h-function file records about its twins."""
    s = twin_settings(c)
    return {
        **s,
        **({"n_pairs": int(n_pairs)} if n_pairs is not None else {}),
        "supervision": f"paired images: {n_pairs if n_pairs is not None else 'the'} twins from {s['dir']}",
    }
