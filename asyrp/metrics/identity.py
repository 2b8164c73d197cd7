"""Face identity: the ArcFace IR-SE50 network of the official Asyrp code, its feature extraction and the ID metric.

The network keeps the parameter names of the official definition (Asyrp_official models/insight_face, from
TreB1eN's InsightFace_Pytorch: ``input_layer``, ``body.<i>.shortcut_layer`` / ``res_layer``, ``output_layer``) so
the published ``model_ir_se50.pth`` (pSp / e4e's release) loads strictly with ``weights_only=True``; it was checked
against the official module on seeded weights (tests/fixtures/identity). Features follow the official ``IDLoss``:
the crop [35:223, 32:220] of a 256x256 image in [-1, 1] (the aligned face), average-pooled to 112x112, 512-d and
unit length. ID (the faces papers' identity similarity) is their cosine between source and edit; the training loss
(``asyrp.losses.identity_loss``) is 1 minus it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.errors import AsyrpUserError, one_line
from .base import HeldCallable, MeanMetric, check_pairs

#: the official IDLoss crop (rows, then columns) of a 256x256 face, and the side it is pooled to
CROP = ((35, 223), (32, 220))
CROP_IMAGE_SIZE = 256
POOL = 112
#: IR-SE50's four stages: (input channels, output channels, units); each stage's first unit halves the resolution
STAGES = ((64, 64, 3), (64, 128, 4), (128, 256, 14), (256, 512, 3))


class IdentityWeightsMissing(AsyrpUserError, FileNotFoundError):
    """The IR-SE50 weights (model_ir_se50.pth) are the user's to download; nothing is fetched."""


class _Squeeze(nn.Module):
    """Squeeze-and-excitation: channels rescaled by a gate computed from their spatial means (reduction 16)."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, channels // reduction, 1, bias=False)
        self.fc2 = nn.Conv2d(channels // reduction, channels, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class _Unit(nn.Module):
    """One improved-residual unit: BN -> 3x3 conv -> PReLU -> 3x3 conv (stride) -> BN -> SE, plus the shortcut (a
    strided subsample when the width is kept, a strided 1x1 conv + BN when it changes)."""

    def __init__(self, c_in: int, c_out: int, stride: int):
        super().__init__()
        if c_in == c_out:
            self.shortcut_layer: nn.Module = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        self.res_layer = nn.Sequential(
            nn.BatchNorm2d(c_in),
            nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False),
            nn.PReLU(c_out),
            nn.Conv2d(c_out, c_out, 3, stride, 1, bias=False),
            nn.BatchNorm2d(c_out),
            _Squeeze(c_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRSE50(nn.Module):
    """ArcFace IR-SE50 on 112x112 inputs -> unit 512-d embeddings (the official ``Backbone(112, 50, mode='ir_se')``
    as IDLoss builds it: affine final BatchNorm1d; its dropout is inactive in eval mode)."""

    def __init__(self):
        super().__init__()
        self.input_layer = nn.Sequential(nn.Conv2d(3, 64, 3, 1, 1, bias=False), nn.BatchNorm2d(64), nn.PReLU(64))
        # registered before the body, as upstream does: the state dict's key order is the official file's
        self.output_layer = nn.Sequential(
            nn.BatchNorm2d(512), nn.Dropout(0.6), nn.Flatten(), nn.Linear(512 * 7 * 7, 512), nn.BatchNorm1d(512)
        )
        units = [
            _Unit(c_in if i == 0 else c_out, c_out, 2 if i == 0 else 1) for c_in, c_out, n in STAGES for i in range(n)
        ]
        self.body = nn.Sequential(*units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.output_layer(self.body(self.input_layer(x))), dim=1, eps=0.0)


def check_face_size(size: tuple[int, int], where: str = "the ID metric") -> None:
    """The official crop is a box of a 256x256 aligned face (``size``: (H, W)); other sizes would cut the wrong
    region."""
    if tuple(size) != (CROP_IMAGE_SIZE, CROP_IMAGE_SIZE):
        raise AsyrpUserError(
            f"{where} crops [35:223, 32:220] of 256x256 aligned faces (the official IR-SE50 crop), got "
            f"{size[0]}x{size[1]} images: use a 256x256 face dataset and arch, or leave out the ID metric / "
            "set model.loss.w_id=0"
        )


class IdentityFeatures(nn.Module):
    """The official identity features of images in [-1, 1]: 256x256 -> crop -> average pool to 112 -> IR-SE50."""

    def __init__(self, net: IRSE50):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_face_size(tuple(x.shape[-2:]))
        (r0, r1), (c0, c1) = CROP
        return self.net(F.adaptive_avg_pool2d(x[:, :, r0:r1, c0:c1], POOL))


def load_irse50(weights: str | Path | Mapping[str, torch.Tensor]) -> IdentityFeatures:
    """The frozen identity features from ``model_ir_se50.pth`` (a path, loaded with weights_only=True) or a state
    dict in its layout, loaded strictly."""
    source = "the given state dict"
    if not isinstance(weights, Mapping):
        path = source = Path(weights)
        if not path.is_file():
            raise IdentityWeightsMissing(
                f"the IR-SE50 identity network needs model_ir_se50.pth at {path} (not found): download it (the "
                "pSp / e4e release the official Asyrp code uses) and set identity.weights=<file>"
            )
        weights = torch.load(path, map_location="cpu", weights_only=True)
    net = IRSE50()
    try:
        net.load_state_dict(weights, strict=True)
    except RuntimeError as err:
        detail = one_line(err).split(":", 1)[-1].strip()  # missing / unexpected / mis-shaped keys
        raise AsyrpUserError(
            f"{source} is not IR-SE50 weights in the official layout (model_ir_se50.pth): {detail[:300]}"
        ) from err
    return IdentityFeatures(net).eval().requires_grad_(False)


def identity_absent(identity: Any) -> str:
    """What the ID metric lacks ("" when nothing): ``identity`` is a path to model_ir_se50.pth or identity features."""
    if identity is None:
        return "no IR-SE50 weights (set identity.weights to model_ir_se50.pth)"
    if isinstance(identity, (str, Path)) and not Path(identity).is_file():
        return f"IR-SE50 weights not found at {identity} (download model_ir_se50.pth there or set identity.weights)"
    return ""


class IdentitySimilarity(MeanMetric):
    """Mean ID: cos(F(x_src), F(x_edit)) of the IR-SE50 identity features ``features`` (higher = identity kept)."""

    higher_is_better = True

    def __init__(self, features: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.features = HeldCallable(features)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        check_pairs(x_src, x_edit)
        self._add((self.features(x_src.float()) * self.features(x_edit.float())).sum(1))
