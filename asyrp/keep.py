"""Keep terms of the training loss (issue 24): what an edit must leave alone, each weighted by its own ``w_keep``.

Config: ``model.loss.keep`` (the ``keep`` group: keep=clip, keep=probe or keep=[clip,probe]); absent = no keep term,
and the loss and its gradients are exactly those without this module.

- ``clip``: text pairs that name a kept attribute on both sides ("a face with brown hair" / "a face with blond hair").
  The term is the mean over images and pairs of |cos(E_I(P_t^edit) - E_I(P_t^orig), d_keep)|: the edit may move
  along the target's text direction, not along a kept one. The image change starts at P_t^orig whatever
  ``clip_reference`` says, because at high t the blur of P_t against x0 would project onto the kept directions too,
  a change the h-function neither made nor can undo.
- ``probe``: linear probes on h per t-bucket, one per kept attribute, trained on a labelled split before the
  h-function (asyrp.probes). The term is the mean |change| of the kept probes' logits between h and
  h + delta_h per unit |w| (the distance moved across each probe's boundary), a function of delta_h alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .config import as_float
from .losses import direction_cosine
from .ops.errors import AsyrpUserError

KINDS = ("clip", "probe")


@dataclass
class ClipKeep:
    """|cos| between the edit's CLIP image change and each kept text direction (rows of ``directions``)."""

    clip: Any  # FrozenCLIP
    directions: torch.Tensor  # (K, D) unit rows, one per kept pair
    w_keep: float
    name: str = "keep_clip"

    def __call__(
        self, e_edit: torch.Tensor, P_orig: torch.Tensor, delta_h: Any, t: Any, e_orig: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``e_orig``: CLIP's embedding of P_orig when the loss already has it (clip_reference=P_orig), else encoded
        here."""
        if e_orig is None:
            with torch.no_grad():
                e_orig = self.clip.encode_image(P_orig)
        cos = torch.stack([direction_cosine(e_edit, e_orig, d) for d in self.directions])  # (K, B)
        return cos.abs().mean()


@dataclass
class ProbeKeep:
    """The mean |change| of the kept probes' logits, g(h + delta_h) - g(h), per unit |w|, at the step's t. An L1
    penalty, like Asyrp's anchor: a squared one has a curvature through the h-function's weights that made the
    official SGD step (lr 0.4) diverge on synthfaces glasses at the first batch (loss 1.5e5, then NaN)."""

    probes: Any  # asyrp.probes.HProbes
    w_keep: float
    name: str = "keep_probe"

    def __call__(
        self, e_edit: torch.Tensor, P_orig: torch.Tensor, delta_h: torch.Tensor, t: Any, e_orig: Any = None
    ) -> torch.Tensor:
        return self.probes.logit_change(delta_h, t, unit=True).abs().mean()


def keep_pairs(clip_cfg: Mapping[str, Any]) -> list[tuple[str, str]]:
    """The (source, target) text pairs of ``model.loss.keep.clip.pairs``, checked."""
    key = "model.loss.keep.clip.pairs"
    pairs = clip_cfg.get("pairs")
    if not pairs:
        raise AsyrpUserError(
            f"keep=clip needs {key}: a list of [source, target] texts that name a kept attribute on both sides, "
            'e.g. [["a face with brown hair", "a face with blond hair"]] (the experiment usually gives them)'
        )
    out = []
    for i, p in enumerate(pairs):
        if isinstance(p, str) or len(p) != 2 or not all(isinstance(s, str) and s.strip() for s in p):
            raise AsyrpUserError(f"{key}[{i}]={p!r} must be two non-empty texts [source, target]")
        if p[0].strip() == p[1].strip():
            raise AsyrpUserError(
                f"{key}[{i}] has the same text on both sides ({p[0]!r}): it names no direction to keep; "
                "give the kept attribute's two values, e.g. brown hair / blond hair"
            )
        out.append((p[0], p[1]))
    return out


def check_keep_config(keep: Mapping[str, Any] | None, arch_name: str | None = None, mode: str = "asyrp") -> None:
    """``model.loss.keep``: its shape, weights, pairs, and keep=probe's labelled split or probe file (a file of another
    arch is refused here, one of another h shape when the backbone is built), all before any network is loaded."""
    if not keep:
        return
    unknown = sorted(set(keep) - set(KINDS))
    if unknown:
        raise AsyrpUserError(f"model.loss.keep.{unknown[0]} is not a keep kind: use {' / '.join(KINDS)} (keep=...)")
    for kind in KINDS:
        if keep.get(kind) is None:
            continue
        if not isinstance(keep[kind], Mapping):
            raise AsyrpUserError(f"model.loss.keep.{kind}={keep[kind]!r} must be a mapping: select it with keep={kind}")
        if as_float(keep[kind].get("w_keep", 1.0), f"model.loss.keep.{kind}.w_keep") < 0:
            raise AsyrpUserError(f"model.loss.keep.{kind}.w_keep={keep[kind].get('w_keep')} must be >= 0")
    if keep.get("clip") is not None:
        keep_pairs(keep["clip"])
    if keep.get("probe") is not None:
        from .probes import check_probe_config

        if mode not in ("asyrp", "symmetric"):
            raise AsyrpUserError(f"keep=probe reads delta_h in h: plan.mode={mode} edits another space (asyrp)")
        check_probe_config(keep["probe"], arch_name)


def clip_keep(clip: Any, clip_cfg: Mapping[str, Any]) -> ClipKeep:
    """The CLIP keep term: one unit text direction per pair. A pair the CLIP model cannot tell apart (identical
    text embeddings) is refused: it would penalise a random direction."""
    pairs = keep_pairs(clip_cfg)
    rows = []
    for src, trg in pairs:
        diff = clip.text_embedding([trg]) - clip.text_embedding([src])
        if float(diff.norm()) < 1e-6:
            raise AsyrpUserError(
                f"model.loss.keep.clip.pairs: {src!r} and {trg!r} have the same CLIP text embedding: "
                "reword the pair so the CLIP model tells its two sides apart"
            )
        rows.append(clip.text_direction([src], [trg]))
    return ClipKeep(clip, torch.stack(rows), as_float(clip_cfg.get("w_keep", 1.0), "model.loss.keep.clip.w_keep"))


def build_keep(keep: Mapping[str, Any] | None, clip: Any, probes: Any = None) -> list:
    """The keep terms of ``model.loss.keep`` for AsyrpLoss (an empty list: none). ``probes``: the HProbes that
    keep=probe needs, trained or loaded by the train task before the module is built."""
    if not keep:
        return []
    terms: list = []
    if keep.get("clip") is not None:
        terms.append(clip_keep(clip, keep["clip"]))
    if keep.get("probe") is not None:
        if probes is None:
            raise ValueError("keep=probe needs the probes (asyrp.probes.prepare_probes) before the module is built")
        terms.append(ProbeKeep(probes, as_float(keep["probe"].get("w_keep", 1.0), "model.loss.keep.probe.w_keep")))
    return terms


def keep_record(keep: Mapping[str, Any] | None, terms: Sequence[Any]) -> dict[str, Any] | None:
    """What an h-function file records about its keep terms (None: trained without one)."""
    if not keep:
        return None
    out: dict[str, Any] = {}
    for term in terms:
        if isinstance(term, ClipKeep):
            out["clip"] = {"w_keep": term.w_keep, "pairs": [list(p) for p in keep_pairs(keep["clip"])]}
        elif isinstance(term, ProbeKeep):
            out["probe"] = {"w_keep": term.w_keep, **term.probes.record()}
    return out
