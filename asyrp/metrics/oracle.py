"""An attribute oracle's verdict on edits: success of the target attribute, preservation of the others."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torchmetrics import Metric

from .base import HeldCallable, check_pairs


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

    def __init__(
        self,
        judge: Callable[[torch.Tensor], Mapping[str, torch.Tensor]],
        target: str | tuple[str, int],
        heads: Sequence[str] | None = None,
        classes: Mapping[str, Sequence[Any]] | None = None,
        **kwargs: Any,
    ):
        super().__init__(**kwargs)
        self.judge = HeldCallable(judge)
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
    def from_oracle(cls, oracle, target: str | tuple[str, int], **kwargs: Any) -> OracleEditScore:
        """The score of an oracle object that has ``judge(images)`` and ``classes`` ({attribute: class names})."""
        return cls(oracle.judge, target, classes=oracle.classes, **kwargs)

    @torch.no_grad()
    def verdicts(self, x_src: torch.Tensor, x_edit: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per image: success (B,), kept (B, other attributes), already_target (B,) (bool tensors)."""
        check_pairs(x_src, x_edit)
        src, edt = self.judge(x_src), self.judge(x_edit)
        missing = [k for k in [self.key, *self.others] if k not in src or k not in edt]
        if missing:
            raise KeyError(f"the judge returned no verdict for {missing}")
        kept = (
            torch.stack([(edt[k] == src[k]).to(self.kept.device) for k in self.others], 1)
            if self.others
            else torch.ones(x_src.shape[0], 0, dtype=torch.bool, device=self.kept.device)
        )
        hit = (lambda v: v != self.value) if self.negate else (lambda v: v == self.value)
        return {
            "success": hit(edt[self.key]).to(self.n.device),
            "kept": kept,
            "already_target": hit(src[self.key]).to(self.n.device),
        }

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


def composed_score(
    ref: Mapping[str, torch.Tensor],
    out: Mapping[str, torch.Tensor],
    targets: Sequence[tuple[str, int]],
    heads: Sequence[str],
) -> dict[str, float]:
    """Several attributes edited at once, from the oracle's readings of the sources (``ref``) and of the edits: ``all``
    = the share of images on which every target holds, ``kept`` = the share that keeps every head no target is on
    (each composed attribute drops out of the others' kept heads), ``both`` = the share with both, and per target
    ``success/<head>=<index>`` and per kept head ``preserved/<head>``. ``heads``: the attributes the judge reads
    (``oracle.classes``; a judge's other outputs, e.g. its confidence, are not heads)."""
    on = {k for k, _ in targets}
    hits = torch.stack([out[k] == v for k, v in targets], 1)
    others = [h for h in heads if h not in on]
    kept = torch.stack([out[h] == ref[h] for h in others], 1) if others else torch.ones(hits.shape[0], 0).bool()
    res = {
        "n": float(hits.shape[0]),
        "all": float(hits.all(1).float().mean()),
        "kept": float(kept.all(1).float().mean()),
        "both": float((hits.all(1) & kept.all(1)).float().mean()),
    }
    res.update({f"success/{k}={v}": float(hits[:, i].float().mean()) for i, (k, v) in enumerate(targets)})
    res.update({f"preserved/{h}": float(kept[:, i].float().mean()) for i, h in enumerate(others)})
    return res


# -- what the oracle reads per head (direction labels) ----------------------------------------------------------
def class_frequencies(readings: Mapping[str, torch.Tensor], classes: Mapping[str, Sequence[Any]]) -> dict:
    """{head: {class name: fraction of the images read as it}} from ``judge(images)``."""
    return {h: {str(c): float((readings[h] == i).float().mean()) for i, c in enumerate(classes[h])} for h in classes}


def head_changes(
    ref: Mapping[str, torch.Tensor], out: Mapping[str, torch.Tensor], classes: Mapping[str, Sequence[Any]]
) -> dict[str, dict]:
    """Per head, from the oracle's readings of references and of their edits: ``flips`` (the fraction of images whose
    class changed), ``after`` (the class frequencies of the edits) and ``to`` (the class most of the changed images
    land on, None when none changed)."""
    after = class_frequencies(out, classes)
    res = {}
    for h in classes:
        changed = out[h] != ref[h]
        landed = out[h][changed]
        res[h] = {
            "flips": float(changed.float().mean()),
            "after": after[h],
            "to": str(classes[h][int(landed.mode().values)]) if landed.numel() else None,
        }
    return res


def logit_margin(logits: Mapping[str, torch.Tensor], target: tuple[str, int]) -> torch.Tensor:
    """(N,) how strongly the target class holds: its logit minus the logsumexp of the other classes' (float64)."""
    key, value = target
    z = logits[key].double()
    others = torch.cat([z[:, :value], z[:, value + 1 :]], 1)
    return z[:, value] - torch.logsumexp(others, 1)
