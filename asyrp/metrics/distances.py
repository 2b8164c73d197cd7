"""Per-image distances: LPIPS loaded offline from the user's weights, and the offline RMSE stand-in."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn


class RMSEDistance(nn.Module):
    """Root-mean-square pixel difference per image on the [-1, 1] scale (offline, no weights).

    Monotone in PSNR (PSNR = 20 log10(2 / d)); it measures pixel energy, not perception, so it is NOT LPIPS and
    its thresholds differ. Default boost threshold 0.5: under the forward process with the linear schedule,
    d(x, x_t) ~ sqrt((1 - sqrt(a_t))^2 E[x^2] + 1 - a_t), which reaches 0.5 near t ~ 160, close to the
    paper's t_boost for its linear-schedule models. The edit threshold 0.35 is a rough guess: measure and set it.
    """

    name = "rmse"

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return (x.float() - y.float()).pow(2).flatten(1).mean(1).sqrt()


class LPIPSWeightsMissing(FileNotFoundError):
    """LPIPS needs the ImageNet backbone weights on disk; nothing is ever downloaded."""


_TV_NAMES = {"alex": "alexnet", "vgg": "vgg16", "squeeze": "squeezenet1_1"}
_TV_WEIGHTS = {"alex": "AlexNet_Weights", "vgg": "VGG16_Weights", "squeeze": "SqueezeNet1_1_Weights"}


def _default_backbone_weights(net: str) -> Path:
    import torchvision

    url = getattr(torchvision.models, _TV_WEIGHTS[net]).DEFAULT.url
    return Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]


class LPIPSDistance(nn.Module):
    """LPIPS (Zhang et al. 2018) per image, images in [-1, 1]: torchmetrics' implementation, loaded offline.

    ``backbone_weights``: the torchvision ImageNet weights file of the feature net (e.g. alexnet-owt-7be5be79.pth);
    default: torch hub's checkpoint cache, where torchvision would have saved it. ``lin_weights``: the LPIPS
    linear layers (default: the copy shipped inside torchmetrics). If a file is absent this raises
    ``LPIPSWeightsMissing`` with one message; it never attempts a download.
    """

    name = "lpips"

    def __init__(
        self, net: str = "alex", *, backbone_weights: str | Path | None = None, lin_weights: str | Path | None = None
    ):
        super().__init__()
        if net not in _TV_NAMES:
            raise ValueError(f"unknown LPIPS net {net!r}: use one of {sorted(_TV_NAMES)}")
        path = Path(backbone_weights) if backbone_weights else _default_backbone_weights(net)
        if not path.is_file():
            raise LPIPSWeightsMissing(
                f"LPIPS({net}) needs the torchvision ImageNet weights of {_TV_NAMES[net]} at {path} (not found). "
                "Copy the file there or pass backbone_weights=<path> (experiments/interval.py: --lpips-weights); "
                "or use the offline distance 'rmse' with its own thresholds."
            )
        try:
            from torchmetrics.functional.image.lpips import _LPIPS
        except ImportError as e:  # pragma: no cover
            raise ImportError("LPIPSDistance needs torchmetrics (pip install torchmetrics)") from e
        if lin_weights is not None and not Path(lin_weights).is_file():
            raise LPIPSWeightsMissing(f"LPIPS linear-layer weights not found at {lin_weights}")
        # pnet_rand=True builds the feature net without touching the network; its weights come from `path`
        lp = _LPIPS(pretrained=True, net=net, pnet_rand=True, model_path=str(lin_weights) if lin_weights else None)
        import torchvision

        tv = getattr(torchvision.models, _TV_NAMES[net])(weights=None)
        tv.load_state_dict(torch.load(path, map_location="cpu", weights_only=True), strict=True)
        # torchmetrics keeps torchvision's `features` layers in slices, child names = indices into `features`
        loaded: set[int] = set()
        for m in lp.net.modules():
            if isinstance(m, nn.Sequential) and all(name.isdigit() for name, _ in m.named_children()):
                for idx, layer in m.named_children():
                    layer.load_state_dict(tv.features[int(idx)].state_dict(), strict=True)
                    loaded.update(id(p) for p in layer.parameters())
        if loaded != {id(p) for p in lp.net.parameters()}:  # pragma: no cover - torchmetrics layout changed
            raise RuntimeError(f"could not map the {net} weights onto torchmetrics' LPIPS feature net")
        self.lpips = lp.eval()
        for p in self.lpips.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True) -> LPIPSDistance:
        return super().train(False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.lpips(x.float(), y.float()).flatten()


def make_distance(name: str = "lpips", **kw) -> nn.Module:
    """'lpips' (kw: net, backbone_weights, lin_weights) or 'rmse'."""
    if name == "lpips":
        return LPIPSDistance(**kw)
    if name == "rmse":
        return RMSEDistance()
    raise ValueError(f"unknown distance {name!r}: use 'lpips' or 'rmse'")
