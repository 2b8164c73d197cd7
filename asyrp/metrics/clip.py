"""CLIP semantics of an edit: the directional score (DiffusionCLIP / Asyrp) and the similarity to the target text."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from .base import HeldCallable, MeanMetric, check_pairs


class DirectionalCLIPSimilarity(MeanMetric):
    """Mean over images of cos(E(x_edit) - E(x_src), text direction) (DiffusionCLIP / Asyrp's directional score).

    ``encode_image``: images -> embeddings (e.g. ``FrozenCLIP.encode_image``); ``text_direction``: a vector (e.g.
    ``FrozenCLIP.text_direction(source, target)``). Swapping source and edit flips the sign.
    """

    higher_is_better = True

    def __init__(
        self, encode_image: Callable[[torch.Tensor], torch.Tensor], text_direction: torch.Tensor, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.encode = HeldCallable(encode_image)
        self.register_buffer(
            "text_direction", F.normalize(text_direction.detach().float().reshape(-1), dim=0), persistent=False
        )

    @classmethod
    def from_clip(cls, clip, source: Sequence[str], target: Sequence[str], **kwargs: Any) -> DirectionalCLIPSimilarity:
        return cls(clip.encode_image, clip.text_direction(list(source), list(target)), **kwargs)

    @torch.no_grad()
    def update(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> None:
        check_pairs(x_src, x_edit)
        d = F.normalize(self.encode(x_edit).float() - self.encode(x_src).float(), dim=-1, eps=1e-7)
        self._add((d * self.text_direction.to(d)).sum(-1))


class CLIPTextSimilarity(MeanMetric):
    """Mean over images of cos(E(x_edit), E_T(target texts)) (CLIP score without the 100x scale)."""

    higher_is_better = True

    def __init__(
        self, encode_image: Callable[[torch.Tensor], torch.Tensor], text_embedding: torch.Tensor, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.encode = HeldCallable(encode_image)
        self.register_buffer(
            "text_embedding", F.normalize(text_embedding.detach().float().reshape(-1), dim=0), persistent=False
        )

    @classmethod
    def from_clip(cls, clip, target: Sequence[str], **kwargs: Any) -> CLIPTextSimilarity:
        return cls(clip.encode_image, clip.text_embedding(list(target)), **kwargs)

    @torch.no_grad()
    def update(self, x_edit: torch.Tensor) -> None:
        e = F.normalize(self.encode(x_edit).float(), dim=-1)
        self._add(e @ self.text_embedding.to(e))
