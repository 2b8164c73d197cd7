"""The one edit scorer: every place that judges edits (the sweep objective, the experiment scripts, direction labels,
the synthfaces judge, experiments/recipes.py) asks an ``EditScorer`` for metrics by name.

The networks are passed in, never imported or downloaded here: ``clip`` (with ``source`` / ``target`` texts),
``oracle`` (any object with ``judge(images) -> {attribute: class index}``, ``classes`` and, for ``attribute_score``,
``oracle(images) -> {attribute: logits}``; the entry point builds it), ``lpips`` (``LPIPSPreservation`` keywords:
the user's weights, or a ``distance`` callable), ``fid_features`` and ``identity`` (the user's model_ir_se50.pth,
``identity.weights``, or identity features such as ``load_irse50``'s) and ``face_parser`` (the user's BiSeNet
79999_iter.pth, ``scorer.face_parser``, or any images -> labels callable), ``inception`` (FID's features from the
user's torchvision inception_v3 file, ``scorer.inception``). A metric whose network or setting is absent is
named by ``absent(metrics)`` with what it lacks; ``score`` refuses it in one line instead of skipping it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..ops.errors import AsyrpUserError
from .clip import CLIPTextSimilarity, DirectionalCLIPSimilarity
from .face_parsing import FaceParser, face_parser_absent
from .fid import FrechetDistance, clip_features, inception_absent, inception_features, oracle_features
from .identity import IdentitySimilarity, identity_absent, load_irse50
from .image import LPIPSPreservation, PSNRPreservation, SegmentationConsistency, SSIMPreservation
from .oracle import OracleEditScore, class_frequencies, head_changes, logit_margin, parse_target

#: every metric ``EditScorer.score`` knows, and the values it gives (``_rec``: to the unedited reconstruction x_rec
#: instead of the source)
METRICS = {
    "n": "n: the number of images",
    "clip_direction": "clip_direction: cos(E(x_edit) - E(x_src), text direction source -> target)",
    "clip_text": "clip_text: cos(E(x_edit), E_T(target))",
    "psnr": "psnr: PSNR(x_src, x_edit) in dB",
    "ssim": "ssim: SSIM(x_src, x_edit)",
    "lpips": "lpips: LPIPS(x_src, x_edit)",
    "psnr_rec": "psnr_rec: PSNR(x_rec, x_edit) in dB",
    "ssim_rec": "ssim_rec: SSIM(x_rec, x_edit)",
    "lpips_rec": "lpips_rec: LPIPS(x_rec, x_edit)",
    "oracle": "success, preserved, already_target, preserved/<attribute>: the oracle's verdicts on oracle_target",
    "validity": "validity: the oracle's mean confidence on the edits",
    "fid": "fid: FID of the edits against fid_real (fid_features, else Inception-v3 from inception, else the oracle's "
    "features, else CLIP's)",
    "id": "id: cos(F(x_src), F(x_edit)) of ArcFace IR-SE50 identity features (256x256 faces, the official crop)",
    "sc": "sc: pixel accuracy of the BiSeNet face parsing of x_edit against that of x_src (DiffusionCLIP's SC)",
}

#: metrics that judge human faces (evaluate.py refuses them on other datasets), each with the image size it needs
#: (None: any size); they join METRICS when their networks are added
FACE_METRICS: dict[str, int | None] = {"id": 256, "sc": None}


class MetricAbsent(AsyrpUserError):
    """A metric was asked for whose network or setting is not there."""


@dataclass
class EditScorer:
    clip: Any = None
    source: Sequence[str] = ()
    target: Sequence[str] = ()
    oracle: Any = None
    oracle_target: str | None = None
    lpips: Mapping[str, Any] | None = None
    fid_features: Callable[[torch.Tensor], torch.Tensor] | None = None
    identity: Any = None
    face_parser: Any = None
    inception: Any = None
    _lpips: Any = field(default=None, init=False, repr=False)

    def absent(self, metrics: Sequence[str]) -> dict[str, str]:
        """{metric: what it lacks} for the metrics of ``metrics`` this scorer cannot compute."""
        out = {}
        for name in metrics:
            if name not in METRICS:
                raise ValueError(f"unknown edit metric {name!r}: use one of {sorted(METRICS)}")
            base = name.removesuffix("_rec")
            needs_clip = base.startswith("clip") or (
                base == "fid" and self.fid_features is None and self.inception is None and self.oracle is None
            )
            if needs_clip and self.clip is None:
                out[name] = "no CLIP model"
            elif base.startswith("clip") and not (self.target and (self.source or base == "clip_text")):
                out[name] = "no source / target texts"
            elif base == "lpips" and not self.lpips:
                out[name] = "no LPIPS weights (lpips: net, backbone_weights, lin_weights)"
            elif base in ("oracle", "validity") and self.oracle is None:
                out[name] = "no attribute oracle"
            elif base == "oracle" and not self.oracle_target:
                out[name] = "no oracle_target for this attribute"
            elif base == "id" and identity_absent(self.identity):
                out[name] = identity_absent(self.identity)
            elif base == "fid" and self.fid_features is None and inception_absent(self.inception):
                out[name] = inception_absent(self.inception)
            elif base == "sc" and face_parser_absent(self.face_parser):
                out[name] = face_parser_absent(self.face_parser)
        return out

    @torch.no_grad()
    def score(
        self,
        x_src: torch.Tensor,
        x_edit: torch.Tensor,
        metrics: Sequence[str],
        *,
        x_rec: torch.Tensor | None = None,
        fid_real: torch.Tensor | None = None,
        prefix: str = "",
    ) -> dict[str, float]:
        """The named metrics of a set of edits (images in [-1, 1], (B, C, H, W)), in the order asked, each key with
        ``prefix``. ``x_rec``: the unedited reconstructions (for the ``_rec`` metrics); ``fid_real``: FID's reference."""
        missing = self.absent(metrics)
        if missing:
            raise MetricAbsent(
                "; ".join(f"metric {k}: {v}" for k, v in missing.items()) + " (EditScorer.absent "
                "names them beforehand; pass the network or drop the metric)"
            )
        out: dict[str, float] = {}
        for name in metrics:
            if name == "n":
                out["n"] = float(x_src.shape[0])
            elif name == "oracle":
                out.update(self._oracle_score(x_src, x_edit))
            elif name == "validity":
                out["validity"] = float(self.oracle.judge(x_edit)["confidence"].mean())
            elif name == "fid":
                out["fid"] = self._fid(x_edit, fid_real)
            elif name.endswith("_rec"):
                if x_rec is None:
                    raise ValueError(f"metric {name} compares the edits with their reconstructions: pass x_rec")
                out[name] = self._mean(name.removesuffix("_rec"), x_rec, x_edit)
            else:
                out[name] = self._mean(name, x_src, x_edit)
        return {f"{prefix}{k}": v for k, v in out.items()}

    def _mean(self, name: str, x_ref: torch.Tensor, x_edit: torch.Tensor) -> float:
        """A mean-over-images metric of (reference, edit)."""
        if name == "clip_text":
            m = CLIPTextSimilarity.from_clip(self.clip, list(self.target))
            m.update(x_edit)
            return float(m.compute())
        if name == "clip_direction":
            m = DirectionalCLIPSimilarity.from_clip(self.clip, list(self.source), list(self.target))
        elif name == "lpips":
            if self._lpips is None:  # built once: the user's weights load on first use
                self._lpips = LPIPSPreservation(**dict(self.lpips))
            m = self._lpips
            m.reset()
        elif name == "id":
            if isinstance(self.identity, (str, Path)):  # loaded once, on first use
                self.identity = load_irse50(self.identity)
            m = IdentitySimilarity(self.identity)
        elif name == "sc":
            if isinstance(self.face_parser, (str, Path)):  # loaded once, on first use
                self.face_parser = FaceParser.from_file(self.face_parser)
            m = SegmentationConsistency(self.face_parser)
        else:
            m = {"psnr": PSNRPreservation, "ssim": SSIMPreservation}[name]()
        m.update(x_ref, x_edit)
        return float(m.compute())

    def _oracle_score(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> dict[str, float]:
        m = OracleEditScore.from_oracle(self.oracle, self.oracle_target)
        m.update(x_src, x_edit)
        return {k: float(v) for k, v in m.compute().items()}

    def _fid(self, x_edit: torch.Tensor, fid_real: torch.Tensor | None) -> float:
        if fid_real is None:
            raise ValueError("metric fid needs its reference images: pass fid_real")
        if self.fid_features is None and self.inception is not None:  # the user's file, loaded once
            self.fid_features = inception_features(self.inception)
        feats = self.fid_features or (
            oracle_features(self.oracle) if self.oracle is not None else clip_features(self.clip)
        )
        m = FrechetDistance(feats)
        m.update(fid_real, real=True)
        m.update(x_edit, real=False)
        return float(m.compute())

    # -- per image ------------------------------------------------------------------------------------------------
    @torch.no_grad()
    def verdicts(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> dict[str, torch.Tensor]:
        """The oracle's per-image verdicts behind the ``oracle`` metric (``OracleEditScore.verdicts``)."""
        self._require("oracle")
        return OracleEditScore.from_oracle(self.oracle, self.oracle_target).verdicts(x_src, x_edit)

    @torch.no_grad()
    def attribute_score(self, x: torch.Tensor) -> torch.Tensor:
        """(N,) how strongly the attribute holds: the oracle's logit margin of oracle_target when there is an oracle
        and a target, else cos(E(x), E_T(target)) - cos(E(x), E_T(source)) (float64)."""
        if self.oracle is not None and self.oracle_target:
            return logit_margin(self.oracle(x.float()), parse_target(self.oracle_target, self.oracle.classes))
        self._require("clip_direction")
        e = self.clip.encode_image(x).double()
        return (
            e @ self.clip.text_embedding(list(self.target)).double()
            - e @ self.clip.text_embedding(list(self.source)).double()
        )

    @property
    def attribute_score_name(self) -> str:
        if self.oracle is not None and self.oracle_target:
            return f"oracle logit margin of {self.oracle_target}"
        return "CLIP cos(target) - cos(source)"

    # -- per head (direction labels) -------------------------------------------------------------------------------
    @torch.no_grad()
    def head_changes(self, x_ref: torch.Tensor, x_edit: torch.Tensor) -> dict[str, dict]:
        """Per oracle head: flip rate, class frequencies after, the class flipped images land on (``head_changes``)."""
        self._require("validity")
        return head_changes(self.oracle.judge(x_ref), self.oracle.judge(x_edit), self.oracle.classes)

    @torch.no_grad()
    def class_frequencies(self, x: torch.Tensor) -> dict[str, dict[str, float]]:
        self._require("validity")
        return class_frequencies(self.oracle.judge(x), self.oracle.classes)

    def _require(self, metric: str) -> None:
        """What a per-image or per-head reading needs: the networks of ``metric`` (validity: just the oracle)."""
        missing = self.absent([metric])
        if missing:
            raise MetricAbsent(f"metric {metric}: {missing[metric]}")
