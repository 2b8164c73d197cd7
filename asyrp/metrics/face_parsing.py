"""The face parser of segmentation consistency (SC): BiSeNet with a ResNet-18 context path, 19 CelebAMask-HQ classes,
in the layout of zllrunning/face-parsing.PyTorch, so its published ``79999_iter.pth`` loads strictly, unchanged.

Written from the architecture (not copied); upstream fetches ImageNet ResNet-18 weights when it builds the net, this
never fetches anything: every weight comes from the user's file. tests/fixtures/face_parsing/ holds the upstream
network's outputs on seeded weights; the test checks this one against them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..backbones.checkpoints import CheckpointError, load_file
from ..ops.errors import AsyrpUserError

N_CLASSES = (
    19  # background + 18 CelebAMask-HQ parts (skin, brows, eyes, glasses, ears, earring, nose, mouth, lips, ...)
)
PARSE_SIZE = 512  # upstream parses at 512 x 512 (test.py resizes with PIL bilinear)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ConvBNReLU(nn.Module):
    """conv (no bias) -> BatchNorm -> ReLU; keys ``conv``, ``bn``."""

    def __init__(self, c_in: int, c_out: int, k: int = 3, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, k, stride, padding=k // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


class BasicBlock(nn.Module):
    """ResNet basic block; a 1x1 conv + BN shortcut (``downsample``) when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.downsample = None
        if c_in != c_out or stride != 1:
            self.downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(r + (x if self.downsample is None else self.downsample(x)))


class ResNet18Trunk(nn.Module):
    """ResNet-18 without its classifier; returns the features at strides 8, 16 and 32."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths = [(64, 64, 1), (64, 128, 2), (128, 256, 2), (256, 512, 2)]
        for i, (c_in, c_out, stride) in enumerate(widths, 1):
            setattr(self, f"layer{i}", nn.Sequential(BasicBlock(c_in, c_out, stride), BasicBlock(c_out, c_out)))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.layer1(self.maxpool(F.relu(self.bn1(self.conv1(x)))))
        f8 = self.layer2(x)
        f16 = self.layer3(f8)
        return f8, f16, self.layer4(f16)


def _global_pool(x: torch.Tensor) -> torch.Tensor:
    return x.mean((2, 3), keepdim=True)


class AttentionRefinement(nn.Module):
    """Features reweighted per channel by a sigmoid of their pooled, projected, normalised mean."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_out)
        self.conv_atten = nn.Conv2d(c_out, c_out, 1, bias=False)
        self.bn_atten = nn.BatchNorm2d(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.conv(x)
        return f * torch.sigmoid(self.bn_atten(self.conv_atten(_global_pool(f))))


class ContextPath(nn.Module):
    """The ResNet trunk, its strides 16 and 32 refined, plus a global context, merged top-down (nearest upsampling)."""

    def __init__(self):
        super().__init__()
        self.resnet = ResNet18Trunk()
        self.arm16 = AttentionRefinement(256, 128)
        self.arm32 = AttentionRefinement(512, 128)
        self.conv_head32 = ConvBNReLU(128, 128)
        self.conv_head16 = ConvBNReLU(128, 128)
        self.conv_avg = ConvBNReLU(512, 128, k=1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, f16, f32 = self.resnet(x)
        context = self.conv_avg(_global_pool(f32))  # broadcast over f32's grid (= upstream's nearest upsampling)
        up32 = self.conv_head32(F.interpolate(self.arm32(f32) + context, f16.shape[2:], mode="nearest"))
        up16 = self.conv_head16(F.interpolate(self.arm16(f16) + up32, f8.shape[2:], mode="nearest"))
        return f8, up16, up32


class FeatureFusion(nn.Module):
    """Concatenated spatial and context features, fused, plus a squeeze-excitation reweighting of themselves."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.convblk = ConvBNReLU(c_in, c_out, k=1)
        self.conv1 = nn.Conv2d(c_out, c_out // 4, 1, bias=False)
        self.conv2 = nn.Conv2d(c_out // 4, c_out, 1, bias=False)

    def forward(self, spatial: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        f = self.convblk(torch.cat([spatial, context], 1))
        return f * torch.sigmoid(self.conv2(F.relu(self.conv1(_global_pool(f))))) + f


class ParsingHead(nn.Module):
    def __init__(self, c_in: int, c_mid: int, n_classes: int):
        super().__init__()
        self.conv = ConvBNReLU(c_in, c_mid)
        self.conv_out = nn.Conv2d(c_mid, n_classes, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.conv(x))


class BiSeNet(nn.Module):
    """Class scores at the input's resolution: the fused head (what parsing uses) and the two auxiliary heads that
    upstream trains with (kept so that the published state dict loads strictly)."""

    def __init__(self, n_classes: int = N_CLASSES):
        super().__init__()
        self.cp = ContextPath()
        self.ffm = FeatureFusion(256, 256)  # upstream's spatial path is the trunk's stride-8 feature itself
        self.conv_out = ParsingHead(256, 256, n_classes)
        self.conv_out16 = ParsingHead(128, 64, n_classes)
        self.conv_out32 = ParsingHead(128, 64, n_classes)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        f8, up16, up32 = self.cp(x)
        outs = (self.conv_out(self.ffm(f8, up16)), self.conv_out16(up16), self.conv_out32(up32))
        return tuple(F.interpolate(o, x.shape[2:], mode="bilinear", align_corners=True) for o in outs)


class FaceParserWeightsMissing(AsyrpUserError, FileNotFoundError):
    """The face parser's weights file is not there; nothing is ever downloaded."""


def face_parser_absent(face_parser: Any) -> str:
    """What the SC metric lacks ("" when nothing): ``face_parser`` is a path to 79999_iter.pth or a labeller."""
    if face_parser is None:
        return "no face parser weights (set scorer.face_parser to face-parsing.PyTorch's 79999_iter.pth)"
    if isinstance(face_parser, (str, Path)) and not Path(face_parser).is_file():
        return f"face parser weights not found at {face_parser} (put 79999_iter.pth there or set scorer.face_parser)"
    return ""


def load_bisenet(path: str | Path) -> BiSeNet:
    """The frozen parser from the user's published file (``79999_iter.pth``: a plain state dict), loaded strictly."""
    path = Path(path)
    if not path.is_file():
        raise FaceParserWeightsMissing(
            f"face parser weights not found at {path}: put zllrunning/face-parsing.PyTorch's 79999_iter.pth there "
            "(or set scorer.face_parser=<file>), or drop the metric sc"
        )
    net = BiSeNet()
    try:
        net.load_state_dict(load_file(path), strict=True)
    except CheckpointError as err:
        raise AsyrpUserError(f"face parser: {err}") from err
    except (RuntimeError, TypeError, AttributeError) as err:  # other keys or shapes, or not a state dict at all
        first = str(err).strip().splitlines()[0]
        raise AsyrpUserError(f"{path} is not a BiSeNet face parser state dict ({first})") from err
    return net.eval().requires_grad_(False)


class FaceParser(nn.Module):
    """images in [-1, 1], (B, 3, H, W) -> (B, 512, 512) class labels, prepared as upstream prepares its inputs:
    resized to 512 x 512 (bilinear; antialiased when shrinking, as PIL does), ImageNet mean / std, argmax of the
    fused head."""

    def __init__(self, net: BiSeNet):
        super().__init__()
        self.net, self.size = net, PARSE_SIZE
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @classmethod
    def from_file(cls, path: str | Path) -> FaceParser:
        return cls(load_bisenet(path))

    def train(self, mode: bool = True) -> FaceParser:
        return super().train(False)

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        x = (x.float() + 1) / 2
        if tuple(x.shape[2:]) != (self.size, self.size):
            x = F.interpolate(x, (self.size, self.size), mode="bilinear", align_corners=False, antialias=True)
        return (x - self.mean) / self.std

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean.device != x.device:  # the edits may live on another device than where the parser was loaded
            self.to(x.device)
        return self.net(self.prepare(x))[0].argmax(1)
