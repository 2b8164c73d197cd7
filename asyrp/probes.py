"""Linear probes on h per t-bucket, one per kept attribute (Balancing Act style), for the keep=probe loss term.

They are trained before the h-function, by the same train.py run, on a labelled split of their own (a folder with
the data writer's ``attributes.json``: ``model.loss.keep.probe.labelled``; never an oracle's reading): its images
are inverted through the inversion cache on the training plan, h is recorded along their unedited walk at every
training t (``asyrp.directions.record_walk``), and one logistic regression (``asyrp.directions.fit_logistic``) per
attribute and t-bucket is fitted on the pooled, standardised h. They are written beside the h-function
(``checkpoints/keep_probes.pt``), and the h-function file records their file, digest, attributes, accuracies and the
labelled split. ``model.loss.keep.probe.file`` reuses a probe file instead of training one (same arch, h shape,
covered t).

A probe's logit is g(h) = w . (pool(h) - mu) / scale + b, so its change under an edit, g(h + delta_h) - g(h) =
w . pool(delta_h) / scale, depends on delta_h alone: the keep term needs no second look at h. The term takes it per
unit |w| (the distance moved across the probe's boundary), so a perfectly separable split, whose |w| only the L2
penalty bounds, does not inflate it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .config import as_float, as_int
from .ops.errors import AsyrpUserError

FORMAT = "asyrp-keep-probes/1"
FILE = "keep_probes.pt"
POOLS = ("mean", "flat")
KEY = "model.loss.keep.probe"


def pool_h(h: torch.Tensor, pool: str) -> torch.Tensor:
    """(B, F) probe features of h (B, C, H, W): channel means (``mean``) or every entry (``flat``)."""
    return h.mean(dim=(2, 3)) if pool == "mean" else h.reshape(h.shape[0], -1)


@dataclass
class HProbes:
    """Probes for ``attributes`` (head=value) in ``buckets`` (lists of t, descending): ``weight`` (n_buckets, K, F),
    ``bias`` (n_buckets, K), ``mu`` (n_buckets, F) and ``scale`` (n_buckets,) the standardisation of the pooled h
    (one scale per bucket, as asyrp.directions.boundary_direction: a near-constant feature gets no 1/std blow-up)."""

    weight: torch.Tensor
    bias: torch.Tensor
    mu: torch.Tensor
    scale: torch.Tensor
    buckets: list[list[int]]
    attributes: list[str]
    pool: str = "mean"
    meta: dict[str, Any] = field(default_factory=dict)  # arch, h_shape, accuracy, labelled split, file, sha256

    def bucket_of(self, t: Any) -> int:
        """The bucket holding t, else the one nearest to it."""
        t = int(torch.as_tensor(t).reshape(-1)[0])
        return min(range(len(self.buckets)), key=lambda b: min(abs(t - s) for s in self.buckets[b]))

    def logits(self, h: torch.Tensor, t: Any) -> torch.Tensor:
        """(B, K) logits of the probes at h."""
        b = self.bucket_of(t)
        z = (pool_h(h, self.pool) - self.mu[b].to(h)) / self.scale[b].to(h)
        return z @ self.weight[b].to(h).T + self.bias[b].to(h)

    def logit_change(self, delta_h: torch.Tensor, t: Any, *, unit: bool = False) -> torch.Tensor:
        """(B, K) g(h + delta_h) - g(h), for every probe: linear in delta_h, differentiable w.r.t. it. ``unit``:
        divided by |w|, the distance moved across each boundary in standardised h (what the keep term penalises:
        a probe that separates its split perfectly has an arbitrarily large |w|, its margin does not)."""
        b = self.bucket_of(t)
        w = self.weight[b].to(delta_h)
        if unit:
            w = w / w.norm(dim=-1, keepdim=True).clamp_min(1e-12)
        return (pool_h(delta_h, self.pool) / self.scale[b].to(delta_h)) @ w.T

    def state(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            **{k: getattr(self, k).detach().cpu() for k in ("weight", "bias", "mu", "scale")},
            "buckets": self.buckets,
            "attributes": self.attributes,
            "pool": self.pool,
            "meta": self.meta,
        }

    def record(self) -> dict[str, Any]:
        """What the h-function file says about its probes (no tensors: the file beside it holds them)."""
        return {"attributes": self.attributes, "pool": self.pool, "buckets": self.buckets, **self.meta}


def t_buckets(steps: Sequence[int], n: int) -> list[list[int]]:
    """The training timesteps (descending) in ``n`` contiguous buckets, as even as possible (0: one per t)."""
    steps = list(steps)
    n = len(steps) if n <= 0 else min(n, len(steps))
    cuts = [round(i * len(steps) / n) for i in range(n + 1)]
    return [steps[cuts[i] : cuts[i + 1]] for i in range(n)]


def fit_probes(
    h: Mapping[int, torch.Tensor],
    labels: Mapping[str, torch.Tensor],
    buckets: list[list[int]],
    *,
    pool: str = "mean",
    l2: float = 1e-3,
    val_fraction: float = 0.25,
) -> HProbes:
    """One logistic probe per attribute and bucket on h recorded at the buckets' t (``{t: (N, C, H, W)}``, the same
    N images at every t). The last ``val_fraction`` of the images are held out: meta["accuracy"][attr] lists the
    (fit, held-out) accuracy per bucket."""
    from .directions.finders import fit_logistic

    n_img = next(iter(h.values())).shape[0]
    n_fit = min(max(int(round(n_img * (1 - val_fraction))), 2), n_img)
    W, B, MU, S = [], [], [], []
    acc: dict[str, list] = {a: [] for a in labels}
    for group in buckets:
        X = torch.stack([pool_h(h[t], pool).double() for t in group])  # (T_b, N, F)
        mu, sd = X[:, :n_fit].reshape(-1, X.shape[-1]).mean(0), X[:, :n_fit].std().clamp_min(1e-12)
        Z = (X - mu) / sd
        ws, bs = [], []
        for a, y in labels.items():
            y = torch.as_tensor(y).double()
            w, b = fit_logistic(Z[:, :n_fit].reshape(-1, Z.shape[-1]), y[:n_fit].repeat(len(group)), l2=l2)
            ws.append(w)
            bs.append(b)
            hit = ((Z @ w + b) > 0) == y.bool()  # (T_b, N)
            held = float(hit[:, n_fit:].double().mean()) if n_fit < n_img else None
            acc[a].append([round(float(hit[:, :n_fit].double().mean()), 4), held and round(held, 4)])
        W.append(torch.stack(ws))
        B.append(torch.tensor(bs, dtype=torch.float64))
        MU.append(mu)
        S.append(sd)
    meta = {"accuracy": acc, "n_fit": n_fit, "n_held_out": n_img - n_fit, "l2": l2}
    f32 = lambda xs: torch.stack(xs).float()  # noqa: E731
    return HProbes(f32(W), f32(B), f32(MU), f32(S), [list(g) for g in buckets], list(labels), pool, meta)


# -- settings, files and the labelled split ----------------------------------------------------------------------
def probe_settings(probe: Mapping[str, Any]) -> dict[str, Any]:
    """``model.loss.keep.probe``, checked (the labelled split is read by ``labelled_split``)."""
    attrs = list(probe.get("attributes") or [])
    if not probe.get("file") and not attrs:
        raise AsyrpUserError(
            f"keep=probe needs {KEY}.attributes: the kept attributes as the data writer records them "
            "(head=value, e.g. [hair_colour=blond, mouth=smiling])"
        )
    bad = [a for a in attrs if not isinstance(a, str) or "=" not in a or a.startswith("=") or a.endswith("=")]
    if bad:
        raise AsyrpUserError(f"{KEY}.attributes: {bad[0]!r} is not head=value (e.g. hair_colour=blond)")
    if probe.get("pool", "mean") not in POOLS:
        raise AsyrpUserError(f"{KEY}.pool={probe.get('pool')!r} must be one of {', '.join(POOLS)}")
    frac = as_float(probe.get("val_fraction", 0.25), f"{KEY}.val_fraction")
    if not 0.0 <= frac <= 0.5:
        raise AsyrpUserError(f"{KEY}.val_fraction={frac} must be in [0, 0.5] (the held-out share of the split)")
    if as_float(probe.get("l2", 1e-3), f"{KEY}.l2") < 0:
        raise AsyrpUserError(f"{KEY}.l2={probe.get('l2')} must be >= 0")
    return {
        "attributes": attrs,
        "pool": str(probe.get("pool", "mean")),
        "buckets": as_int(probe.get("buckets", 0), f"{KEY}.buckets", 0),
        "l2": as_float(probe.get("l2", 1e-3), f"{KEY}.l2"),
        "val_fraction": frac,
        "n_images": as_int(probe.get("n_images", 128), f"{KEY}.n_images", 2),
    }


def labelled_split(probe: Mapping[str, Any], image_size: int = 32) -> tuple[list[Path], dict[str, torch.Tensor]]:
    """(files, {attribute: 1/0 per file}) of the probes' labelled split (asyrp.data.labels.labelled_split)."""
    from .data.labels import labelled_split as read_split

    s = probe_settings(probe)
    return read_split(
        probe.get("labelled"),
        s["attributes"],
        n_images=s["n_images"],
        image_size=image_size,
        key=KEY,
        user="keep=probe",
        needs="the probe of kept attribute {}",
    )


def load_probes(path: str | Path, arch_name: str | None, h_shape: Sequence[int] | None = None) -> HProbes:
    """A probe file (weights only), refused when it was trained on another backbone (arch name or h shape)."""
    path = Path(str(path)).expanduser()
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise AsyrpUserError(
            f"{KEY}.file={path} does not exist: pass the keep_probes.pt of a run, or file=null"
        ) from None
    except Exception as err:  # noqa: BLE001 - damaged, or pickled code refused by weights_only
        raise AsyrpUserError(f"{KEY}.file={path} is not a readable probe file ({type(err).__name__})") from None
    if not isinstance(obj, dict) or obj.get("format") != FORMAT:
        raise AsyrpUserError(f"{KEY}.file={path} is not a probe file ({FORMAT}): pass a run's {FILE}")
    meta = dict(obj.get("meta") or {})
    theirs = (meta.get("arch"), list(meta.get("h_shape") or []))
    if (arch_name is not None and theirs[0] != arch_name) or (h_shape is not None and theirs[1] != list(h_shape)):
        raise AsyrpUserError(
            f"{KEY}.file={path} was trained on another backbone (arch {theirs[0]}, h {theirs[1]}; this run: "
            f"arch {arch_name}, h {list(h_shape) if h_shape is not None else '?'}): train probes for this one "
            f"({KEY}.file=null with {KEY}.labelled)"
        )
    t = {k: obj[k] for k in ("weight", "bias", "mu", "scale")}
    return HProbes(**t, buckets=obj["buckets"], attributes=obj["attributes"], pool=obj["pool"], meta=meta)


def check_probe_config(probe: Mapping[str, Any], arch_name: str | None) -> None:
    """Everything about keep=probe that can be checked before any network is loaded."""
    probe_settings(probe)
    if probe.get("file"):
        load_probes(probe["file"], arch_name)
    else:
        labelled_split(probe)


def prepare_probes(
    probe: Mapping[str, Any],
    *,
    backbone,
    a: torch.Tensor,
    plan,
    arch_name: str | None,
    cache_dir: str | Path,
    out_dir: str | Path,
    write: bool = True,
    guard=None,
) -> HProbes:
    """The probes keep=probe trains with: read from ``file``, or trained on the labelled split (its images inverted
    through the inversion cache on ``plan``, h recorded at every training t), then written to ``out_dir``/FILE
    (``write``: rank 0) with their digest in ``meta``. Runs before the h-function's training starts."""
    from .data.cache import cached_inversions
    from .directions import record_walk
    from .ops.guard import UNGUARDED
    from .ops.io import atomic_save, file_digest

    steps = [t for _, t, _ in plan.edit_steps()]
    h_shape = [int(v) for v in backbone.h_shape]
    if probe.get("file"):
        probes = load_probes(probe["file"], arch_name, h_shape)
        s = probe_settings(probe)
        missing = [x for x in s["attributes"] if x not in probes.attributes]
        ts = [t for g in probes.buckets for t in g]
        if missing or not min(ts) <= min(steps) <= max(steps) <= max(ts):
            raise AsyrpUserError(
                f"{KEY}.file={probe['file']} has probes for {probes.attributes} at t {min(ts)}-{max(ts)}; this run "
                f"keeps {s['attributes']} and trains t {min(steps)}-{max(steps)}: train new probes ({KEY}.file=null)"
            )
    else:
        s = probe_settings(probe)
        files, labels = labelled_split(probe, int(backbone.image_size))
        # only x_T is read (record_walk walks again to record h): the cache holds the inversion alone
        kw = {"image_size": int(backbone.image_size), "guard": guard or UNGUARDED, "walk_to": None}
        entries = cached_inversions(str(cache_dir), backbone, a, files, plan, **kw)
        walk = record_walk(backbone, torch.stack([e["x_T"] for e in entries]), a, plan)
        probes = fit_probes(
            walk.h, labels, t_buckets(steps, s["buckets"]), pool=s["pool"], l2=s["l2"], val_fraction=s["val_fraction"]
        )
        probes.meta.update(
            arch=arch_name,
            h_shape=h_shape,
            labelled={"folder": str(probe["labelled"]), "n_images": len(files)},
            supervision=f"labelled images: {len(files)} from {probe['labelled']} (the data writer's labels)",
        )
    path = Path(str(out_dir)) / FILE
    if write:
        atomic_save(probes.state(), path)
        probes.meta.update(file=FILE, sha256=file_digest(path))
    return probes
