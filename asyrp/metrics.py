"""Edit metrics as torchmetrics ``Metric``s: accumulate over batches, merge across DDP ranks, compute once.

Every state is a sum (``dist_reduce_fx="sum"``), so the value computed after syncing the states of all processes is
exactly the value of one pass over all their data (``Metric.merge_state`` does the same merge by hand).

Images are tensors in [-1, 1], (B, C, H, W). Networks are passed in as callables and never downloaded:

- semantics:   ``DirectionalCLIPSimilarity`` (cos(E(x_edit) - E(x_src), text direction)), ``CLIPTextSimilarity``
               (cos(E(x_edit), E_T(target))), ``OracleEditScore`` (the one oracle scorer: success and preservation,
               judged by any ``judge(images) -> {attribute: class index}`` callable with its class names passed in;
               ``OracleEditScore.from_oracle`` for an oracle object with ``judge`` and ``classes``);
- preservation: ``LPIPSPreservation`` (the user's weights through ``LPIPSDistance``, a clear error when they are
               missing; ``RMSEDistance`` is its offline stand-in), ``SSIMPreservation``, ``PSNRPreservation``,
               ``SegmentationConsistency`` (mean IoU of a segmentation model's maps of source and edit);
- quality:     ``FrechetDistance`` (FID with an injectable feature network; ``oracle_features`` and ``clip_features``
               make offline ones).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric

__all__ = [
    "DirectionalCLIPSimilarity",
    "CLIPTextSimilarity",
    "LPIPSPreservation",
    "SSIMPreservation",
    "PSNRPreservation",
    "FrechetDistance",
    "OracleEditScore",
    "SegmentationConsistency",
    "FeatureFn",
    "oracle_features",
    "clip_features",
    "frechet_distance",
    "parse_target",
    "RMSEDistance",
    "LPIPSDistance",
    "LPIPSWeightsMissing",
    "make_distance",
]


class _Callable:
    """Holds a network/callable so that nn.Module does not register it (its weights stay out of the metric's
    state_dict and of DDP's sync); ``Metric._apply`` moves it along when it is a module."""

    def __init__(self, fn: Callable):
        self.fn = fn

    def __call__(self, *a, **kw):
        return self.fn(*a, **kw)


class _MeanMetric(Metric):
    """sum / count over images, both summed across processes."""

    full_state_update = False
    is_differentiable = False

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def _add(self, values: torch.Tensor) -> None:
        values = values.detach().reshape(-1).to(torch.float64)
        self.total = self.total + values.sum().to(self.total.device)
        self.count = self.count + values.numel()

    def compute(self) -> torch.Tensor:
        if int(self.count) == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        return self.total / self.count

    def _apply(self, fn, *args, **kwargs):
        out = super()._apply(fn, *args, **kwargs)
        for v in self.__dict__.values():
            if isinstance(v, _Callable) and isinstance(v.fn, torch.nn.Module):
                v.fn._apply(fn)
        return out


def _pairs(x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
    if x_src.shape != x_edit.shape:
        raise ValueError(f"source {tuple(x_src.shape)} and edit {tuple(x_edit.shape)} must have the same shape")


# -- CLIP -----------------------------------------------------------------------------------------------------
class DirectionalCLIPSimilarity(_MeanMetric):
    """Mean over images of cos(E(x_edit) - E(x_src), text direction) (DiffusionCLIP / Asyrp's directional score).

    ``encode_image``: images -> embeddings (e.g. ``FrozenCLIP.encode_image``); ``text_direction``: a vector (e.g.
    ``FrozenCLIP.text_direction(source, target)``). Swapping source and edit flips the sign.
    """

    higher_is_better = True

    def __init__(self, encode_image: Callable[[torch.Tensor], torch.Tensor], text_direction: torch.Tensor, **kwargs: Any):
        super().__init__(**kwargs)
        self.encode = _Callable(encode_image)
        self.register_buffer("text_direction", F.normalize(text_direction.detach().float().reshape(-1), dim=0),
                             persistent=False)

    @classmethod
    def from_clip(cls, clip, source: Sequence[str], target: Sequence[str], **kwargs: Any) -> "DirectionalCLIPSimilarity":
        return cls(clip.encode_image, clip.text_direction(list(source), list(target)), **kwargs)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        _pairs(x_src, x_edit)
        d = F.normalize(self.encode(x_edit).float() - self.encode(x_src).float(), dim=-1, eps=1e-7)
        self._add((d * self.text_direction.to(d)).sum(-1))


class CLIPTextSimilarity(_MeanMetric):
    """Mean over images of cos(E(x_edit), E_T(target texts)) (CLIP score without the 100x scale)."""

    higher_is_better = True

    def __init__(self, encode_image: Callable[[torch.Tensor], torch.Tensor], text_embedding: torch.Tensor, **kwargs: Any):
        super().__init__(**kwargs)
        self.encode = _Callable(encode_image)
        self.register_buffer("text_embedding", F.normalize(text_embedding.detach().float().reshape(-1), dim=0),
                             persistent=False)

    @classmethod
    def from_clip(cls, clip, target: Sequence[str], **kwargs: Any) -> "CLIPTextSimilarity":
        return cls(clip.encode_image, clip.text_embedding(list(target)), **kwargs)

    @torch.no_grad()
    def update(self, x_edit: torch.Tensor) -> None:
        e = F.normalize(self.encode(x_edit).float(), dim=-1)
        self._add(e @ self.text_embedding.to(e))


# -- preservation ------------------------------------------------------------------------------------------------
class LPIPSPreservation(_MeanMetric):
    """Mean LPIPS(x_src, x_edit) (lower = better preserved).

    ``distance``: any per-image callable (x, y) -> (B,); default ``asyrp.interval.LPIPSDistance(net,
    backbone_weights=..., lin_weights=...)``, which loads the user's torchvision weights and never downloads: a
    missing file raises ``asyrp.interval.LPIPSWeightsMissing`` naming the path to fill.
    """

    higher_is_better = False

    def __init__(self, distance: Callable | None = None, *, net: str = "alex", backbone_weights: Any = None,
                 lin_weights: Any = None, **kwargs: Any):
        super().__init__(**kwargs)
        if distance is None:
            distance = LPIPSDistance(net, backbone_weights=backbone_weights, lin_weights=lin_weights)
        self.distance = _Callable(distance)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        _pairs(x_src, x_edit)
        self._add(self.distance(x_src.float(), x_edit.float()))


class SSIMPreservation(_MeanMetric):
    """Mean SSIM(x_src, x_edit) per image (Gaussian window; 1 = identical). ``data_range`` 2 for [-1, 1]."""

    higher_is_better = True

    def __init__(self, data_range: float = 2.0, kernel_size: int = 11, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_range, self.kernel_size = float(data_range), int(kernel_size)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        from torchmetrics.functional.image import structural_similarity_index_measure as ssim

        _pairs(x_src, x_edit)
        k = min(self.kernel_size, *x_src.shape[-2:])
        k -= 1 - k % 2  # odd
        self._add(ssim(x_edit.double(), x_src.double(), data_range=self.data_range, kernel_size=k, reduction="none"))


class PSNRPreservation(_MeanMetric):
    """Mean over images of PSNR(x_src, x_edit) in dB (+inf when an edit is identical to its source)."""

    higher_is_better = True

    def __init__(self, data_range: float = 2.0, **kwargs: Any):
        super().__init__(**kwargs)
        self.data_range = float(data_range)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        from torchmetrics.functional.image import peak_signal_noise_ratio as psnr

        _pairs(x_src, x_edit)
        dims = tuple(range(1, x_src.dim()))
        self._add(psnr(x_edit.double(), x_src.double(), data_range=self.data_range, reduction="none", dim=dims))


class SegmentationConsistency(_MeanMetric):
    """Mean over images of the mean IoU between segment(x_src) and segment(x_edit).

    ``segment``: images -> (B, H, W) integer labels or (B, K, H, W) scores (argmax over K). Per image the IoU is
    averaged over the classes present in either map (an identical pair scores 1). ``ignore_index`` is skipped.
    """

    higher_is_better = True

    def __init__(self, segment: Callable[[torch.Tensor], torch.Tensor], ignore_index: int | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.segment = _Callable(segment)
        self.ignore_index = ignore_index

    def _labels(self, x: torch.Tensor) -> torch.Tensor:
        s = self.segment(x)
        if s.dim() == 4:
            s = s.argmax(1)
        if s.dim() != 3:
            raise ValueError(f"segment(images) must give (B, H, W) labels or (B, K, H, W) scores, got {tuple(s.shape)}")
        return s.long()

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
        _pairs(x_src, x_edit)
        self._add(self.miou(self._labels(x_src), self._labels(x_edit), self.ignore_index))


# -- distances (LPIPS and its offline stand-in) ---------------------------------------------------------------------------------------------------
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

    def __init__(self, net: str = "alex", *, backbone_weights: str | Path | None = None, lin_weights: str | Path | None = None):
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

    def train(self, mode: bool = True) -> "LPIPSDistance":
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


# -- oracle ------------------------------------------------------------------------------------------------------
def parse_target(target: str | tuple[str, int], classes: Mapping[str, Sequence[Any]] | None = None) -> tuple[str, int]:
    """'mouth=smiling' -> ('mouth', class index) using ``classes`` ({attribute: class names}, e.g. ``oracle.classes``;
    needed for a 'attr=value' string)."""
    if not isinstance(target, str):
        key, value = target
        return str(key), int(value)
    if "=" not in target:
        raise ValueError(f"oracle target {target!r}: write attribute=value, e.g. mouth=smiling")
    key, value = target.split("=", 1)
    if classes is None:
        raise ValueError(f"oracle target {target!r}: pass the oracle's class names (classes=oracle.classes)")
    if key not in classes:
        raise ValueError(f"oracle target {target!r}: unknown attribute {key!r} (known: {sorted(classes)})")
    names = [str(c) for c in classes[key]]
    if value not in names:
        raise ValueError(f"oracle target {target!r}: {key} takes one of {names}")
    return key, names.index(value)


class OracleEditScore(Metric):
    """An attribute oracle's verdict on edits: success = the target attribute holds in the edit; preservation =
    every other attribute reads as in the source (oracle vs oracle, so an oracle mistake on a source is not
    counted against the edit).

    ``judge``: images -> {attribute: (B,) class indices}; ``target``: 'attr=value' or (attr, class index), or
    'attr!=value' for a removal (success = the attribute no longer reads as value, e.g. a reversed edit);
    ``classes``: {attribute: class names} (the attributes judged are its keys), or ``heads``: the attribute names.
    ``from_oracle(oracle, target)`` takes both from an oracle object (``oracle.judge``, ``oracle.classes``).
    compute() -> dict with success, preserved, already_target (the source already had it) and preserved/<attr> per
    other attribute; ``verdicts`` gives the per-image success and kept-attribute flags behind them.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, judge: Callable[[torch.Tensor], Mapping[str, torch.Tensor]], target: str | tuple[str, int],
                 heads: Sequence[str] | None = None, classes: Mapping[str, Sequence[Any]] | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.judge = _Callable(judge)
        self.negate = isinstance(target, str) and "!=" in target
        self.key, self.value = parse_target(target.replace("!=", "=") if self.negate else target, classes)
        if heads is None and classes is not None:
            heads = list(classes)
        if heads is None:
            raise ValueError("OracleEditScore: pass heads=[...] (the attributes the judge reads)")
        self.others = [h for h in heads if h != self.key]
        for name in ("n", "success", "preserved", "already_target"):
            self.add_state(name, default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("kept", default=torch.zeros(len(self.others), dtype=torch.long), dist_reduce_fx="sum")

    @classmethod
    def from_oracle(cls, oracle, target: str | tuple[str, int], **kwargs: Any) -> "OracleEditScore":
        """The score of an oracle object that has ``judge(images)`` and ``classes`` ({attribute: class names})."""
        return cls(oracle.judge, target, classes=oracle.classes, **kwargs)

    @torch.no_grad()
    def verdicts(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image: success (B,), kept (B, other attributes), already_target (B,) (bool tensors)."""
        _pairs(x_src, x_edit)
        src, edt = self.judge(x_src), self.judge(x_edit)
        missing = [k for k in [self.key, *self.others] if k not in src or k not in edt]
        if missing:
            raise KeyError(f"the judge returned no verdict for {missing}")
        kept = torch.stack([(edt[k] == src[k]).to(self.kept.device) for k in self.others], 1) if self.others else \
            torch.ones(x_src.shape[0], 0, dtype=torch.bool, device=self.kept.device)
        hit = (lambda v: v != self.value) if self.negate else (lambda v: v == self.value)
        return {"success": hit(edt[self.key]).to(self.n.device), "kept": kept,
                "already_target": hit(src[self.key]).to(self.n.device)}

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        v = self.verdicts(x_src, x_edit)
        self.n = self.n + x_src.shape[0]
        self.success = self.success + v["success"].sum()
        self.already_target = self.already_target + v["already_target"].sum()
        self.preserved = self.preserved + v["kept"].all(1).sum()
        self.kept = self.kept + v["kept"].sum(0)

    def compute(self) -> dict[str, torch.Tensor]:
        n = self.n.double().clamp(min=1) if int(self.n) else torch.tensor(float("nan"), dtype=torch.float64)
        out = {"success": self.success / n, "preserved": self.preserved / n, "already_target": self.already_target / n}
        out.update({f"preserved/{k}": self.kept[i] / n for i, k in enumerate(self.others)})
        return out


# -- FID ---------------------------------------------------------------------------------------------------------
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

    def __init__(self, features: Callable[[torch.Tensor], torch.Tensor] | None = None, num_features: int | None = None,
                 **kwargs: Any):
        super().__init__(**kwargs)
        if features is None:
            raise ValueError("FrechetDistance needs a feature network: pass features=<callable images -> (B, D)> "
                             "(offline: asyrp.metrics.oracle_features(oracle) or clip_features(clip))")
        num_features = num_features or getattr(features, "num_features", None)
        if not num_features:
            raise ValueError("FrechetDistance: pass num_features (the feature dimension D)")
        self.features, self.num_features = _Callable(features), int(num_features)
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
