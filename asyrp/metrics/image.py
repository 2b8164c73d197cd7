"""Preservation of the source image: LPIPS, SSIM, PSNR and segmentation consistency, as means over images."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from .base import HeldCallable, MeanMetric, check_pairs
from .distances import LPIPSDistance


class LPIPSPreservation(MeanMetric):
    """Mean LPIPS(x_src, x_edit) (lower = better preserved).

    ``distance``: any per-image callable (x, y) -> (B,); default ``LPIPSDistance(net,
    backbone_weights=..., lin_weights=...)``, which loads the user's torchvision weights and never downloads: a
    missing file raises ``LPIPSWeightsMissing`` naming the path to fill.
    """

    higher_is_better = False

    def __init__(
        self,
        distance: Callable | None = None,
        *,
        net: str = "alex",
        backbone_weights: Any = None,
        lin_weights: Any = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if distance is None:
            distance = LPIPSDistance(net, backbone_weights=backbone_weights, lin_weights=lin_weights)
        self.distance = HeldCallable(distance)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        check_pairs(x_src, x_edit)
        self._add(self.distance(x_src.float(), x_edit.float()))


class SSIMPreservation(MeanMetric):
    """Mean SSIM(x_src, x_edit) per image (Gaussian window; 1 = identical). ``data_range`` 2 for [-1, 1]."""

    higher_is_better = True

    def __init__(self, data_range: float = 2.0, kernel_size: int = 11, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_range, self.kernel_size = float(data_range), int(kernel_size)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        check_pairs(x_src, x_edit)
        k = min(self.kernel_size, *x_src.shape[-2:])
        k -= 1 - k % 2  # odd
        self._add(ssim(x_edit.double(), x_src.double(), data_range=self.data_range, kernel_size=k, reduction="none"))


class PSNRPreservation(MeanMetric):
    """Mean over images of PSNR(x_src, x_edit) in dB (+inf when an edit is identical to its source)."""

    higher_is_better = True

    def __init__(self, data_range: float = 2.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_range = float(data_range)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        from torchmetrics.functional.image import peak_signal_noise_ratio as psnr

        check_pairs(x_src, x_edit)
        dims = tuple(range(1, x_src.dim()))
        self._add(psnr(x_edit.double(), x_src.double(), data_range=self.data_range, reduction="none", dim=dims))


class SegmentationConsistency(MeanMetric):
    """Segmentation consistency (SC): mean over images of the agreement of segment(x_src) and segment(x_edit).

    ``segment``: images -> (B, H, W) integer labels or (B, K, H, W) scores (argmax over K); the face parser
    ``FaceParser`` for the paper's SC. ``measure``: ``"pixel_accuracy"`` (DiffusionCLIP's SC: the fraction of pixels
    whose label the edit keeps) or ``"miou"`` (IoU averaged over the classes present in either map; an identical pair
    scores 1). Pixels the source labels ``ignore_index`` (and that class, for ``"miou"``) are skipped.
    """

    higher_is_better = True
    MEASURES = ("pixel_accuracy", "miou")

    def __init__(
        self,
        segment: Callable[[torch.Tensor], torch.Tensor],
        measure: str = "pixel_accuracy",
        ignore_index: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if measure not in self.MEASURES:
            raise ValueError(f"unknown segmentation consistency measure {measure!r}: use one of {self.MEASURES}")
        self.segment = HeldCallable(segment)
        self.measure, self.ignore_index = measure, ignore_index

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        s = self.segment(x)
        if s.dim() == 4:
            s = s.argmax(1)
        if s.dim() != 3:
            raise ValueError(f"segment(images) must give (B, H, W) labels or (B, K, H, W) scores, got {tuple(s.shape)}")
        return s.long()

    @staticmethod
    def pixel_accuracy(a: torch.Tensor, b: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
        """(B,) the fraction of the pixels of label maps a (the reference) and b with the same label."""
        keep = torch.ones_like(a, dtype=torch.bool) if ignore_index is None else a != ignore_index
        same = ((a == b) & keep).flatten(1).sum(1).double()
        return same / keep.flatten(1).sum(1).clamp_min(1).double()

    @staticmethod
    def miou(a: torch.Tensor, b: torch.Tensor, ignore_index: int | None = None) -> torch.Tensor:
        """(B,) mean IoU of label maps a and b over the classes present in either."""
        out = []
        for la, lb in zip(a, b):
            classes = torch.unique(torch.cat([la.reshape(-1), lb.reshape(-1)]))
            if ignore_index is not None:
                classes = classes[classes != ignore_index]
            ious = [((la == c) & (lb == c)).sum() / ((la == c) | (lb == c)).sum() for c in classes]
            out.append(torch.stack(ious).double().mean() if ious else torch.tensor(1.0, dtype=torch.float64))
        return torch.stack(out)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        check_pairs(x_src, x_edit)
        agreement = self.pixel_accuracy if self.measure == "pixel_accuracy" else self.miou
        self._add(agreement(self._labels(x_src), self._labels(x_edit), self.ignore_index))
