"""guide=classifier (issue 24): an image classifier on P_t, trained on a labelled split the user provides, as the
h-function's target signal and as a keep term.

Config: ``model.loss.guide.classifier`` (the ``guide`` group; guide=none, the default, leaves the loss, its logged
terms and its gradients exactly as without it). The classifier (asyrp.classifier.PtClassifier, its own network,
never an oracle's) is trained by the same train.py run before the h-function: the labelled split's images are
inverted through the inversion cache on the training plan, whose entries hold P_t^orig of the unedited walk at every
generation step; the network learns every listed attribute from (P_t, t) at the training t, and is written beside
the h-function (checkpoints/guide_classifier.pt). Frozen, it adds to the loss, with g_k the logit of attribute k:

    w_target * mean softplus(-s * g_target(P_t^edit, t))          (BCE towards the target; s = -1 for head!=value)
  + w_keep * mean_k |g_k(P_t^edit, t) - g_k(P_t^orig, t)|           (the kept attributes; the P_orig side no grad)

logged as ``guide_target`` and ``guide_keep``. The gradient reaches the h-function only, through P_t^edit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .classifier import FILE, KEY, PtClassifier, classifier_state, fit_classifier, load_classifier
from .config import as_float, as_int
from .ops.errors import AsyrpUserError

KINDS = ("classifier", "twins")  # twins: asyrp.twins


def parse_target(target: Any) -> tuple[str, float]:
    """``head=value`` (add the attribute: sign +1) or ``head!=value`` (remove it: sign -1) -> (head=value, sign)."""
    text = str(target or "").strip()
    sign = -1.0 if "!=" in text else 1.0
    attr = text.replace("!=", "=", 1)
    head, _, value = attr.partition("=")
    if not head.strip() or not value.strip() or "=" in value:
        raise AsyrpUserError(
            f"{KEY}.target={target!r} must be head=value (add it, e.g. glasses=True) or head!=value (remove it), "
            "as the data writer's attributes.json records the attribute"
        )
    return f"{head.strip()}={value.strip()}", sign


def guide_settings(c: Mapping[str, Any]) -> dict[str, Any]:
    """``model.loss.guide.classifier``, checked (the labelled split is read by ``labelled``)."""
    target, sign = parse_target(c.get("target"))
    kept = list(c.get("kept") or [])
    bad = [a for a in kept if not isinstance(a, str) or "=" not in a or a.startswith("=") or a.endswith("=")]
    if bad:
        raise AsyrpUserError(f"{KEY}.kept: {bad[0]!r} is not head=value (e.g. hair_colour=blond)")
    if target in kept:
        raise AsyrpUserError(
            f"{KEY}.kept lists the target {target}: the edit cannot both change and keep it; drop it from kept"
        )
    s: dict[str, Any] = {"target": target, "sign": sign, "kept": kept}
    for k, default in (("w_target", 1.0), ("w_keep", 1.0), ("lr", 2e-3)):
        s[k] = as_float(c.get(k, default), f"{KEY}.{k}")
        if s[k] < 0 or (k == "lr" and s[k] == 0):
            raise AsyrpUserError(f"{KEY}.{k}={c.get(k)} must be {'> 0' if k == 'lr' else '>= 0'}")
    s["val_fraction"] = as_float(c.get("val_fraction", 0.25), f"{KEY}.val_fraction")
    if not 0.0 <= s["val_fraction"] <= 0.5:
        raise AsyrpUserError(f"{KEY}.val_fraction={s['val_fraction']} must be in [0, 0.5] (the held-out share)")
    s["n_images"] = as_int(c.get("n_images", 128), f"{KEY}.n_images", 2)
    s["epochs"] = as_int(c.get("epochs", 5), f"{KEY}.epochs", 1)
    s["width"] = as_int(c.get("width", 16), f"{KEY}.width", 1)
    s["flip"] = bool(c.get("flip", True))
    s["seed"] = as_int(c.get("seed", 0), f"{KEY}.seed")
    return s


def labelled(c: Mapping[str, Any], image_size: int = 32) -> tuple[list[Path], dict[str, torch.Tensor]]:
    """(files, {attribute: 1/0}) of the classifier's labelled split: the target and every kept attribute."""
    from .data.labels import labelled_split

    s = guide_settings(c)
    return labelled_split(
        c.get("labelled"),
        [s["target"], *s["kept"]],
        n_images=s["n_images"],
        image_size=image_size,
        key=KEY,
        user="guide=classifier",
        needs="the classifier's attribute {}",
    )


def check_guide_config(guide: Mapping[str, Any] | None, arch_name: str | None = None) -> None:
    """``model.loss.guide``: its shape, settings, and the labelled split or classifier file, before any network is
    loaded. Every plan.mode has a P_t^edit (asyrp.samplers.asyrp_step), so none is refused."""
    if not guide:
        return
    unknown = sorted(set(guide) - set(KINDS))
    if unknown:
        raise AsyrpUserError(
            f"model.loss.guide.{unknown[0]} is not a guide kind: use guide=classifier, guide=twins or guide=none"
        )
    c = guide.get("classifier")
    if c is None:
        return
    if not isinstance(c, Mapping):
        raise AsyrpUserError(f"{KEY}={c!r} must be a mapping: select it with guide=classifier")
    s = guide_settings(c)
    if c.get("file"):
        _, attrs, _ = load_classifier(c["file"], arch_name)
        _covers(c["file"], attrs, s)
    else:
        labelled(c)


def _covers(path: Any, attrs: list[str], s: Mapping[str, Any], ts: list[int] | None = None, steps=None) -> None:
    missing = [a for a in [s["target"], *s["kept"]] if a not in attrs]
    outside = steps is not None and ts and not min(ts) <= min(steps) <= max(steps) <= max(ts)
    if missing or outside:
        raise AsyrpUserError(
            f"{KEY}.file={path} reads {attrs}" + (f" at t {min(ts)}-{max(ts)}" if ts else "") + f"; this run needs "
            f"{[s['target'], *s['kept']]}" + (f" at t {min(steps)}-{max(steps)}" if steps else "") + f": train a new "
            f"classifier ({KEY}.file=null with {KEY}.labelled)"
        )


@dataclass
class GuideClassifier:
    """The frozen classifier, its attributes (logit columns, head=value) and what its file records."""

    net: PtClassifier
    attributes: list[str]
    meta: dict[str, Any] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"attributes": self.attributes, **self.meta}


def prepare_guide(
    c: Mapping[str, Any],
    *,
    backbone,
    a: torch.Tensor,
    plan,
    arch_name: str | None,
    cache_dir: str | Path,
    out_dir: str | Path,
    write: bool = True,
    guard=None,
    cache_batch_size: int = 4,
) -> GuideClassifier:
    """The classifier guide=classifier trains with: read from ``file``, or trained on the labelled split's P_t^orig
    at the training t (read from the inversion cache built on ``plan``), then written to ``out_dir``/FILE
    (``write``: rank 0) with its digest in ``meta``. Runs before the h-function's training starts."""
    from .data.cache import cached_inversions
    from .ops.guard import UNGUARDED
    from .ops.io import atomic_save, file_digest

    s = guide_settings(c)
    steps = plan.edit_steps()
    ts = [t for _, t, _ in steps]
    if c.get("file"):
        net, attrs, meta = load_classifier(c["file"], arch_name)
        _covers(c["file"], attrs, s, meta.get("t"), ts)
        guide = GuideClassifier(net, attrs, meta)
    else:
        size = int(backbone.image_size)
        files, labels = labelled(c, size)
        # P_t^orig is read at the training t only: the walk stops at t_edit, as the training cache's does
        kw = {"image_size": size, "guard": guard or UNGUARDED, "walk_to": plan.t_edit, "batch_size": cache_batch_size}
        entries = cached_inversions(str(cache_dir), backbone, a, files, plan, **kw)
        assert all(int(entries[0]["t"][k]) == t for k, t, _ in steps), "inversion cache built for another schedule"
        P = torch.stack([e["P_orig"][[k for k, _, _ in steps]].float() for e in entries])  # (N, T, 3, H, W)
        Y = torch.stack([labels[x].float() for x in labels], dim=1)
        net, meta = fit_classifier(
            P, ts, Y, **{k: s[k] for k in ("epochs", "lr", "width", "val_fraction", "seed", "flip")}
        )
        attrs = list(labels)
        meta.update(
            arch=arch_name,
            image_size=size,
            accuracy={x: acc for x, acc in zip(attrs, meta["held_out_accuracy"])},
            labelled={"folder": str(c["labelled"]), "n_images": len(files)},
            supervision=f"labelled images: {len(files)} from {c['labelled']} (the data writer's labels)",
        )
        guide = GuideClassifier(net, attrs, meta)
        path = Path(str(out_dir)) / FILE
        if write:
            atomic_save(classifier_state(net, attrs, meta), path)
            guide.meta.update(file=FILE, sha256=file_digest(path))
    return guide


@dataclass
class ClassifierGuide:
    """The loss term: called ``term(P_edit, P_orig, t) -> (weighted sum, {name: unweighted value})``."""

    guide: GuideClassifier
    target: int  # logit column of the target
    sign: float  # +1: towards the attribute, -1: away from it
    kept: list[int]  # logit columns of the kept attributes
    w_target: float
    w_keep: float

    @property
    def net(self) -> PtClassifier:
        return self.guide.net

    def __call__(self, P_edit: torch.Tensor, P_orig: torch.Tensor, t: Any, **_: Any) -> tuple[torch.Tensor, dict]:
        logits = self.net(P_edit, t)
        target = F.softplus(-self.sign * logits[:, self.target]).mean()
        total, terms = self.w_target * target, {"guide_target": target.detach()}
        if self.kept:
            with torch.no_grad():
                ref = self.net(P_orig.to(P_edit), t)[:, self.kept]
            keep = (logits[:, self.kept] - ref).abs().mean()
            total = total + self.w_keep * keep
            terms["guide_keep"] = keep.detach()
        return total, terms


def build_guide(guide: Mapping[str, Any] | None, classifier: GuideClassifier | None) -> Any:
    """The term of ``model.loss.guide`` for AsyrpLoss (None: guide=none). ``classifier``: from ``prepare_guide``."""
    if (guide or {}).get("twins") is not None:
        from .twins import build_twin_guide

        return build_twin_guide(guide["twins"])
    c = (guide or {}).get("classifier")
    if c is None:
        return None
    if classifier is None:
        raise ValueError("guide=classifier needs its classifier (asyrp.guide.prepare_guide) before the module is built")
    s = guide_settings(c)
    col = {x: i for i, x in enumerate(classifier.attributes)}
    return ClassifierGuide(
        classifier, col[s["target"]], s["sign"], [col[x] for x in s["kept"]], s["w_target"], s["w_keep"]
    )


def guide_record(guide: Mapping[str, Any] | None, term: Any) -> dict[str, Any] | None:
    """What an h-function file records about its guide (None: trained without one)."""
    if term is None:
        return None
    if not isinstance(term, ClassifierGuide):
        from .twins import twin_record

        return {"twins": twin_record(guide["twins"])}
    s = guide_settings(guide["classifier"])
    settings = {k: s[k] for k in ("target", "sign", "kept", "w_target", "w_keep")}
    return {"classifier": {**settings, **term.guide.record()}}
