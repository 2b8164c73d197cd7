"""The Asyrp training objective: a directional CLIP loss plus an L1 anchor to the unedited prediction.

L = w_clip * L_direction(P_t^edit, y_trg; x0, y_src) + w_recon * c * |P_t^edit - P_t^orig|,
with c = cos(E_T(y_src), E_T(y_trg)) when ``recon_scale_by_text_cosine`` (official), else 1.

L_direction uses the official form -log((2 - d) / 2), where d = 1 - cos(E_I(P_t^edit) - E_I(x0), text direction)
is DiffusionCLIP's directional distance. The image direction starts from ``clip_reference``: ``x0`` (official,
the clean source image) or ``P_orig`` (the unedited prediction P_t^orig at the same t, so the blur of P_t at high t
is in both ends and cancels out of the direction instead of being "corrected" by the h-function). It is taken per image and then averaged: identical to the official value at
its batch size of 1, and a plain mean over images, so a batch split across DDP ranks (gradients averaged) gives the
same update as the whole batch in one process.

``keep``: optional keep terms (asyrp.keep), each added as w_keep * term and logged under its own name.
``guide``: the optional term of guide=classifier (asyrp.guide; reads P_t^edit and P_t^orig) or guide=twins
(asyrp.twins; reads P_t^edit and the twin's P_t): it adds its own weighted sum and logs its parts (``guide_target``,
``guide_keep``, ``guide_twin``). None: the loss is exactly that without it.

``w_id`` (0 = off, as upstream by default): the official identity loss, w_id * (1 - cos(F(P_t^edit), F(P_t^orig))),
F the ArcFace IR-SE50 features of the official crop (asyrp.metrics.identity), the original side detached.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .clip import FrozenCLIP


def direction_cosine(e_edit: torch.Tensor, e_src: torch.Tensor, text_dir: torch.Tensor) -> torch.Tensor:
    """cos between the image direction E_I(edit) - E_I(src) and the text direction, one value per image."""
    img_dir = F.normalize(e_edit - e_src, dim=-1, eps=1e-7)
    return (img_dir * text_dir.to(img_dir)).sum(-1)


def directional_clip_loss(e_edit: torch.Tensor, e_src: torch.Tensor, text_dir: torch.Tensor) -> torch.Tensor:
    """Official -log((2 - d) / 2) with d = 1 - cos, per image (shape (B,))."""
    d = 1 - direction_cosine(e_edit, e_src, text_dir)
    return -torch.log((2 - d) / 2)


def identity_loss(features: Any, P_edit: torch.Tensor, P_orig: torch.Tensor) -> torch.Tensor:
    """1 - cos(F(P_t^edit), F(P_t^orig)) per image, the unedited side without a gradient.

    What the official training meant: it calls ``IDLoss(x0_t, x0_t_origin)`` and IDLoss detaches its first argument,
    the edited image, so the official term gives the h-function no gradient at all (the source says "We don't use
    this"). Here the detached side is the original; the gradient reaches the h-function through F(P_t^edit) only."""
    with torch.no_grad():
        f_orig = features(P_orig.to(P_edit))
    return 1 - (features(P_edit) * f_orig).sum(1)


def recon_loss(P_edit: torch.Tensor, P_orig: torch.Tensor) -> torch.Tensor:
    """L1 between the edited and the unedited prediction of x0 (mean over every pixel of the batch)."""
    return F.l1_loss(P_edit, P_orig.to(P_edit))


@dataclass
class AsyrpLoss:
    """The weighted sum; ``text_dir`` and ``text_cosine`` are computed once per run by the caller."""

    clip: FrozenCLIP
    text_dir: torch.Tensor
    text_cosine: float
    w_clip: float = 1.0
    w_recon: float = 3.0
    recon_scale_by_text_cosine: bool = True
    clip_reference: str = "x0"
    keep: list = field(default_factory=list)
    guide: Any = None  # asyrp.guide.ClassifierGuide of guide=classifier, asyrp.twins.TwinGuide of guide=twins
    w_id: float = 0.0
    identity: Any = None  # the frozen identity features (asyrp.build.identity) when w_id > 0

    def __post_init__(self) -> None:
        if self.clip_reference not in ("x0", "P_orig"):
            raise ValueError(f"model.loss.clip_reference={self.clip_reference!r} must be x0 or P_orig")
        if self.w_id and self.identity is None:
            raise ValueError(f"model.loss.w_id={self.w_id} needs the identity network (asyrp.build.identity)")

    @property
    def recon_weight(self) -> float:
        return self.w_recon * (self.text_cosine if self.recon_scale_by_text_cosine else 1.0)

    def __call__(
        self,
        e_x0: torch.Tensor,
        P_edit: torch.Tensor,
        P_orig: torch.Tensor,
        delta_h: Any = None,
        t: Any = None,
        P_twin: torch.Tensor | None = None,
        twin_weight: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """e_x0: CLIP embeddings of the source images (computed once per batch, no grad); delta_h and the step's t
        are read by keep terms only, P_twin (the twins' P_t at t) and twin_weight (its per-pixel weights) by guide=twins
        only."""
        if self.clip_reference == "P_orig":
            with torch.no_grad():
                e_x0 = self.clip.encode_image(P_orig.to(P_edit))
        # with w_clip = 0 and no keep term (guide=twins) the CLIP term is only logged: no graph through CLIP, so the
        # backward skips it (the gradient is the same; make demo's twin trainings, docs/performance.md)
        with torch.set_grad_enabled(torch.is_grad_enabled() and bool(self.w_clip or self.keep)):
            e_edit = self.clip.encode_image(P_edit)
            clip_term = directional_clip_loss(e_edit, e_x0, self.text_dir).mean()
        recon_term = recon_loss(P_edit, P_orig)
        loss = self.recon_weight * recon_term
        if self.w_clip:
            loss = self.w_clip * clip_term + loss
        terms = {"clip": clip_term.detach(), "recon": recon_term.detach()}
        e_orig = e_x0 if self.clip_reference == "P_orig" else None  # one CLIP pass of P_orig for the loss and keep
        for keep in self.keep:
            value = keep(e_edit, P_orig.to(P_edit), delta_h, t, e_orig=e_orig)
            loss = loss + keep.w_keep * value
            terms[keep.name] = value.detach()
        if self.guide is not None:
            extra = {"weight": twin_weight} if twin_weight is not None else {}
            value, parts = self.guide(P_edit, P_orig.to(P_edit), t, P_twin=P_twin, **extra)
            loss = loss + value
            terms.update(parts)
        if self.w_id:
            id_term = identity_loss(self.identity, P_edit, P_orig).mean()
            loss = loss + self.w_id * id_term
            terms["id"] = id_term.detach()
        return {"loss": loss, **terms}
