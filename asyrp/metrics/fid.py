"""FID with an injected feature network (nothing downloads), and the offline feature networks."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torchmetrics import Metric

from .base import HeldCallable


class FeatureFn:
    """A feature network for ``FrechetDistance``: ``fn(images) -> (B, num_features)``."""

    def __init__(self, fn: Callable[[torch.Tensor], torch.Tensor], num_features: int, name: str = "features"):
        self.fn, self.num_features, self.name = fn, int(num_features), name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.fn(x)


def oracle_features(oracle) -> FeatureFn:
    """The synthfaces oracle's penultimate features (128-d), images resized to its 32 x 32 input."""

    def fn(x: torch.Tensor) -> torch.Tensor:
        if x.shape[-1] != 32:
            x = F.interpolate(x.float(), size=32, mode="bilinear", antialias=True, align_corners=False)
        return oracle.embed(x.float())

    return FeatureFn(fn, oracle.heads[next(iter(oracle.heads))].in_features, "oracle")


def clip_features(clip) -> FeatureFn:
    """The CLIP image encoder's unit-norm embeddings."""
    dim = int(getattr(clip.model.visual, "output_dim", 0) or clip.encode_image(torch.zeros(1, 3, 8, 8)).shape[-1])
    return FeatureFn(clip.encode_image, dim, f"clip:{getattr(clip, 'name', 'clip')}")


def inception_absent(weights: Any) -> str | None:
    """Why ``inception_features(weights)`` cannot be built (None: it can)."""
    if weights is None:
        return None
    if not Path(str(weights)).is_file():
        return f"no Inception weights at {weights} (scorer.inception=<torchvision inception_v3_google-0cc3c7bd.pth>)"
    return None


def inception_features(weights: str | Path) -> FeatureFn:
    """Inception-v3 pool features (2048-d) from the user's torchvision ImageNet file (inception_v3_google-*.pth),
    loaded strictly with weights_only; images resized to 299 and normalised as torchvision's pretrained model expects.
    torchmetrics' FID downloads the TF-ported FID Inception instead: values from these weights are close to, not
    equal to, published FIDs."""
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=False)
    try:
        net.load_state_dict(torch.load(str(weights), map_location="cpu", weights_only=True), strict=True)
    except (RuntimeError, KeyError, TypeError) as err:
        raise ValueError(f"{weights} is not torchvision's inception_v3 state dict: {str(err).splitlines()[0]}") from err
    net.fc = torch.nn.Identity()  # the 2048-d pool features
    net.eval().requires_grad_(False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def fn(x: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x.float(), size=299, mode="bilinear", align_corners=False)
        return net(((x + 1) / 2 - mean) / std)

    return FeatureFn(fn, 2048, f"inception:{Path(str(weights)).name}")


def _sqrtm_trace(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """tr(sqrt(A B)) for symmetric PSD A, B: the eigenvalues of A B are real and >= 0 (up to round-off)."""
    ev = torch.linalg.eigvals(a @ b)
    return ev.real.clamp(min=0).sqrt().sum()


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """|mu1 - mu2|^2 + tr(C1) + tr(C2) - 2 tr(sqrt(C1 C2)) (float64)."""
    mu1, mu2, cov1, cov2 = (t.double() for t in (mu1, mu2, cov1, cov2))
    return ((mu1 - mu2) ** 2).sum() + torch.trace(cov1) + torch.trace(cov2) - 2 * _sqrtm_trace(cov1, cov2)


class FrechetDistance(Metric):
    """FID with an injected feature network (nothing downloads; there is no default network).

    ``features``: images -> (B, D); ``num_features`` D (read from ``features.num_features`` when it has one, e.g.
    ``oracle_features(oracle)``, ``clip_features(clip)``). ``update(images, real=True/False)``. States are the sums of
    features and of their outer products (float64), so DDP merging is exact. Needs >= 2 images per side. Values from
    another feature network than Inception are NOT comparable with published FIDs.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(
        self,
        features: Callable[[torch.Tensor], torch.Tensor] | None = None,
        num_features: int | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        if features is None:
            raise ValueError(
                "FrechetDistance needs a feature network: pass features=<callable images -> (B, D)> "
                "(offline: asyrp.metrics.oracle_features(oracle) or clip_features(clip))"
            )
        num_features = num_features or getattr(features, "num_features", None)
        if not num_features:
            raise ValueError("FrechetDistance: pass num_features (the feature dimension D)")
        self.features, self.num_features = HeldCallable(features), int(num_features)
        D = self.num_features
        for side in ("real", "fake"):
            self.add_state(f"{side}_sum", default=torch.zeros(D, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_outer", default=torch.zeros(D, D, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{side}_n", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    @torch.no_grad()
    def update(self, images: torch.Tensor, real: bool) -> None:
        f = self.features(images).detach().reshape(images.shape[0], -1).double()
        if f.shape[1] != self.num_features:
            raise ValueError(f"feature network gave {f.shape[1]} features, expected num_features={self.num_features}")
        side = "real" if real else "fake"
        setattr(self, f"{side}_sum", getattr(self, f"{side}_sum") + f.sum(0))
        setattr(self, f"{side}_outer", getattr(self, f"{side}_outer") + f.T @ f)
        setattr(self, f"{side}_n", getattr(self, f"{side}_n") + f.shape[0])

    def _stats(self, side: str) -> tuple[torch.Tensor, torch.Tensor]:
        n = int(getattr(self, f"{side}_n"))
        if n < 2:
            raise ValueError(f"FrechetDistance needs at least 2 {side} images, got {n}")
        s, o = getattr(self, f"{side}_sum"), getattr(self, f"{side}_outer")
        mu = s / n
        cov = (o - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov

    def compute(self) -> torch.Tensor:
        mu1, c1 = self._stats("real")
        mu2, c2 = self._stats("fake")
        return frechet_distance(mu1, c1, mu2, c2).clamp(min=0)

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        if isinstance(self.features.fn, torch.nn.Module):
            self.features.fn._apply(fn)
        return out
