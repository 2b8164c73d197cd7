"""The editing interval [T, t_edit] and the quality-boosting start t_boost, measured on data (paper Sec. 4).

Two curves over t, averaged over a set of images x:
  editing strength    d(x, P_t)  — how much of the image the step at t still decides; edit while it is large:
                                   t_edit = first t (scanning up from 0) with d(x, P_t) >= 0.33 * cos(src, trg text)
  quality deficiency  d(x, x_t)  — how much noise x_t still carries; below the first t with d(x, x_t) >= 1.2
                                   (t_boost) the generation is stochastic (eta = 1) to boost quality.
d is LPIPS in the paper (``asyrp.metrics.LPIPSDistance``). ``RMSEDistance`` is an offline stand-in with its own
thresholds (see its docstring).

By default x_t comes from the forward process q(x_t | x0) with one fixed noise draw per image (the paper's
definition; P_t = the network's x0-prediction at that x_t). ``process="inversion"`` instead walks the
deterministic DDIM inversion as the official measurement script does.

The official tables are off by one step: the official script walks the inversion in pairs (t -> t_next), computes
the x0-prediction from the network call at t, but files LPIPS(x0, P_t) under t_next, the timestep it moves to.
Its strength curve is therefore shifted one step later, and the t_edit read from it is one step larger (with its
1000-step measurement: one timestep) than the first t whose own P_t reaches the threshold. (Its x_t curve is filed
correctly.) Here every value is filed under the t it was computed at. The published values in
conf/plan/*.yaml (their ``interval``) are kept as printed in the paper (``source: paper``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .ddim import P_t, WalkStep, ddim_walk
from .metrics import LPIPSDistance, LPIPSWeightsMissing, RMSEDistance, make_distance  # noqa: F401 - re-exported
from .plan import inversion_pairs
from .schedules import alpha_at

__all__ = [
    "RMSEDistance",
    "LPIPSDistance",
    "LPIPSWeightsMissing",
    "make_distance",
    "IntervalCurves",
    "NoCrossingError",
    "measure_curves",
    "first_crossing",
    "choose_t_edit",
    "choose_t_boost",
    "thresholds_for",
    "resolve_interval",
    "DEFAULT_THRESHOLDS",
    "choose_interval",
    "value_at",
    "summary_rows",
    "curve_table",
]

#: (edit, boost) thresholds per distance. LPIPS: the paper's 0.33 / 1.2. RMSE: see RMSEDistance.
DEFAULT_THRESHOLDS: dict[str, dict[str, float]] = {
    "lpips": {"edit": 0.33, "boost": 1.2},
    "rmse": {"edit": 0.35, "boost": 0.5},
}


# -- curves ------------------------------------------------------------------------------------------------------
@dataclass
class IntervalCurves:
    """Mean (and std over images) of d(x, P_t) and d(x, x_t) at increasing timesteps t."""

    t: list[int]
    strength: list[float]
    deficiency: list[float]
    strength_std: list[float] = field(default_factory=list)
    deficiency_std: list[float] = field(default_factory=list)
    distance: str = "?"
    process: str = "forward"
    n_images: int = 0

    COLUMNS = ("t", "strength", "strength_std", "deficiency", "deficiency_std")

    def save_csv(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        n = len(self.t)
        sstd = self.strength_std or [math.nan] * n
        dstd = self.deficiency_std or [math.nan] * n
        with open(path, "w", newline="") as f:
            f.write(f"# distance={self.distance} process={self.process} n_images={self.n_images}\n")
            w = csv.writer(f)
            w.writerow(self.COLUMNS)
            for row in zip(self.t, self.strength, sstd, self.deficiency, dstd):
                w.writerow([row[0], *(f"{v:.6g}" for v in row[1:])])
        return path

    @classmethod
    def load_csv(cls, path: str | Path) -> IntervalCurves:
        meta: dict[str, str] = {}
        rows: list[list[str]] = []
        with open(path, newline="") as f:
            for line in f:
                if line.startswith("#"):
                    meta.update(kv.split("=", 1) for kv in line[1:].split() if "=" in kv)
                    continue
                rows.append(next(csv.reader([line])))
        header, body = rows[0], rows[1:]
        cols = {name: [r[i] for r in body] for i, name in enumerate(header)}
        return cls(
            t=[int(v) for v in cols["t"]],
            strength=[float(v) for v in cols["strength"]],
            deficiency=[float(v) for v in cols["deficiency"]],
            strength_std=[float(v) for v in cols.get("strength_std", [])],
            deficiency_std=[float(v) for v in cols.get("deficiency_std", [])],
            distance=meta.get("distance", "?"),
            process=meta.get("process", "?"),
            n_images=int(meta.get("n_images", 0)),
        )

    def plot(
        self,
        path: str | Path,
        *,
        t_edit: int | None = None,
        t_boost: int | None = None,
        edit_threshold: float | None = None,
        boost_threshold: float | None = None,
    ) -> Path:
        """PNG of both curves with the thresholds and the chosen t_edit / t_boost (matplotlib, Agg backend)."""
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig, ax = plt.subplots(figsize=(7, 4))
        ax.plot(self.t, self.strength, label=f"editing strength {self.distance}(x, P_t)", color="tab:blue")
        ax.plot(self.t, self.deficiency, label=f"quality deficiency {self.distance}(x, x_t)", color="tab:orange")
        if edit_threshold is not None:
            ax.axhline(edit_threshold, color="tab:blue", ls=":", lw=1)
        if boost_threshold is not None:
            ax.axhline(boost_threshold, color="tab:orange", ls=":", lw=1)
        if t_edit is not None:
            ax.axvline(t_edit, color="tab:blue", ls="--", lw=1, label=f"t_edit = {t_edit}")
        if t_boost is not None:
            ax.axvline(t_boost, color="tab:orange", ls="--", lw=1, label=f"t_boost = {t_boost}")
        ax.set_xlabel("t")
        ax.set_ylabel(self.distance)
        ax.set_title(f"{self.n_images} images, x_t from {self.process}")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=120)
        plt.close(fig)
        return path


@torch.no_grad()
def measure_curves(
    backbone,
    x0: torch.Tensor,
    *,
    a: torch.Tensor,
    distance: nn.Module,
    ts: Sequence[int] | None = None,
    stride: int = 1,
    t0: int = 999,
    process: str = "forward",
    seed: int = 0,
    batch_size: int = 8,
) -> IntervalCurves:
    """d(x, P_t) and d(x, x_t) for the images ``x0`` (N, C, H, W in [-1, 1]) at timesteps ``ts``.

    ``ts`` defaults to ``range(0, t0 + 1, stride)``; t_edit/t_boost are then resolved to ``stride`` timesteps.
    ``process="forward"``: x_t = sqrt(a_t) x + sqrt(1 - a_t) z with one z per image drawn from ``seed`` (the same
    z for every t; results do not depend on ``batch_size``); one full network pass per t and batch.
    ``process="inversion"``: x_t along the deterministic DDIM inversion through ``ts`` (starting at x itself),
    P_t from the same network call that moves the inversion on, filed under t (not t_next, see module doc).
    """
    ts = sorted({int(t) for t in (ts if ts is not None else range(0, t0 + 1, stride))})
    if process not in ("forward", "inversion"):
        raise ValueError(f"unknown process {process!r}: use 'forward' or 'inversion'")
    N = x0.shape[0]
    g = torch.Generator().manual_seed(int(seed))
    z_all = torch.randn(tuple(x0.shape), generator=g).to(x0)
    S = torch.zeros(len(ts), N, dtype=torch.float64)
    D = torch.zeros(len(ts), N, dtype=torch.float64)
    for lo in range(0, N, batch_size):
        x = x0[lo : lo + batch_size]
        rows = slice(lo, lo + x.shape[0])
        if process == "forward":
            for i, t in enumerate(ts):
                a_t = alpha_at(a, t)
                x_t = a_t.sqrt().to(x.dtype) * x + (1 - a_t).sqrt().to(x.dtype) * z_all[rows]
                eps = backbone.eps(backbone(x_t, torch.full((x.shape[0],), float(t), device=x.device)))
                S[i, rows] = distance(x, P_t(x_t, eps, a_t)).double().cpu()
                D[i, rows] = distance(x, x_t).double().cpu()
            continue

        # inversion: the walk up ts; P_t comes from the call that moves x_t on and is filed under t. The last
        # pair (t_max, t_max) makes no move (a_next = a_t) but measures the last timestep.
        def record(s: WalkStep) -> None:
            i = ts.index(s.t)
            S[i, rows] = distance(x, s.P_t).double().cpu()
            D[i, rows] = distance(x, s.x_t).double().cpu()

        ddim_walk(backbone, x, inversion_pairs(ts) + [(ts[-1], ts[-1])], a, callback=record)
    return IntervalCurves(
        t=ts,
        strength=S.mean(1).tolist(),
        deficiency=D.mean(1).tolist(),
        strength_std=S.std(1, unbiased=False).tolist(),
        deficiency_std=D.std(1, unbiased=False).tolist(),
        distance=getattr(distance, "name", type(distance).__name__),
        process=process,
        n_images=N,
    )


# -- choosing t_edit / t_boost ---------------------------------------------------------------------------------
class NoCrossingError(ValueError):
    """The curve never reaches the threshold on the measured timesteps."""


def _points(curve: Any, which: str) -> tuple[list[int], list[float]]:
    if isinstance(curve, IntervalCurves):
        return list(curve.t), list(getattr(curve, which))
    if isinstance(curve, Mapping):
        items = sorted((int(k), float(v)) for k, v in curve.items())
        return [k for k, _ in items], [v for _, v in items]
    ts, vs = curve  # (ts, values)
    return [int(t) for t in ts], [float(v) for v in vs]


def first_crossing(ts: Sequence[int], values: Sequence[float], threshold: float, what: str = "value") -> int:
    """The smallest t with value >= threshold (equality counts); NoCrossingError if there is none."""
    pairs = sorted(zip(ts, values))
    for t, v in pairs:
        if v >= threshold:  # NaN compares False and is skipped
            return int(t)
    finite = [(v, t) for t, v in pairs if not math.isnan(v)]
    best = f"its maximum is {max(finite)[0]:.4g} at t={max(finite)[1]}" if finite else "it has no finite values"
    raise NoCrossingError(
        f"{what} never reaches {threshold:.4g} on t in [{pairs[0][0] if pairs else '?'}, "
        f"{pairs[-1][0] if pairs else '?'}] ({best}): lower the threshold, measure up to larger t, "
        "or give t_edit/t_boost explicitly (plan.t_edit / plan.t_boost, or conf/plan/fixed.yaml)"
    )


def choose_t_edit(curve: Any, threshold: float = 0.33, text_cosine: float = 1.0) -> int:
    """First t (scanning up from 0) with editing strength d(x, P_t) >= threshold * text_cosine.

    ``curve``: IntervalCurves, {t: strength}, or (ts, strengths). ``text_cosine``: CLIP cosine similarity of
    the source and target texts (similar texts = small change = shorter interval). Values are filed under the t
    of their own P_t, so this has none of the official one-step shift (module docstring).
    """
    ts, vs = _points(curve, "strength")
    return first_crossing(ts, vs, threshold * text_cosine, "editing strength")


def choose_t_boost(curve: Any, threshold: float = 1.2) -> int:
    """First t (scanning up from 0) with quality deficiency d(x, x_t) >= threshold; boost (eta = 1) below it."""
    ts, vs = _points(curve, "deficiency")
    return first_crossing(ts, vs, threshold, "quality deficiency")


def thresholds_for(cfg: Mapping[str, Any] | None, distance: str) -> tuple[float, float]:
    """(edit, boost) thresholds for a distance: cfg['thresholds'][distance] over DEFAULT_THRESHOLDS."""
    th = dict(DEFAULT_THRESHOLDS.get(distance, {}))
    if cfg is not None and cfg.get("thresholds") and cfg["thresholds"].get(distance):
        th.update(dict(cfg["thresholds"][distance]))
    if "edit" not in th or "boost" not in th:
        raise ValueError(f"no thresholds for distance {distance!r}: set thresholds.{distance}.edit/boost")
    return float(th["edit"]), float(th["boost"])


def resolve_interval(
    cfg: Mapping[str, Any], curve: IntervalCurves | None = None, text_cosine: float | None = None
) -> tuple[int, int]:
    """(t_edit, t_boost) from the ``interval`` of a conf/plan config.

    ``source: paper | fixed``: the config's numbers. ``source: measured``: chosen on ``curve`` (from
    ``measure_curves`` on your data) with the thresholds of the curve's distance; ``text_cosine`` overrides
    the config's.
    """
    source = cfg.get("source")
    if source in ("paper", "fixed"):
        if cfg.get("t_edit") is None or cfg.get("t_boost") is None:
            raise ValueError(f"plan.interval source {source!r} needs t_edit and t_boost")
        return int(cfg["t_edit"]), int(cfg["t_boost"])
    if source == "measured":
        if curve is None:
            raise ValueError("plan.interval source 'measured' needs curves: run asyrp.interval.measure_curves first")
        edit_th, boost_th = thresholds_for(cfg, curve.distance)
        cos = float(text_cosine if text_cosine is not None else cfg.get("text_cosine", 1.0))
        return choose_t_edit(curve, edit_th, cos), choose_t_boost(curve, boost_th)
    raise ValueError(f"unknown plan.interval source {source!r}: use paper, fixed or measured")


# -- reporting a measurement ---------------------------------------------------------------------------------------
def choose_interval(
    curve: IntervalCurves, edit_threshold: float, boost_threshold: float, text_cosine: float = 1.0
) -> tuple[int | None, int | None, list[str]]:
    """(t_edit, t_boost, problems): a curve that never reaches its threshold gives None and its reason."""
    chosen, problems = [], []
    for name, choose, args in (
        ("t_edit", choose_t_edit, (edit_threshold, text_cosine)),
        ("t_boost", choose_t_boost, (boost_threshold,)),
    ):
        try:
            chosen.append(choose(curve, *args))
        except NoCrossingError as err:
            chosen.append(None)
            problems.append(f"{name}: {err}")
    return chosen[0], chosen[1], problems


def value_at(curve: IntervalCurves, which: str, t: int) -> float:
    """The measured value of ``which`` ("strength" | "deficiency") at the measured timestep nearest to t."""
    i = min(range(len(curve.t)), key=lambda k: abs(curve.t[k] - t))
    return getattr(curve, which)[i]


def summary_rows(
    curve: IntervalCurves,
    t_edit: int | None,
    t_boost: int | None,
    *,
    edit_threshold: float,
    boost_threshold: float,
    text_cosine: float = 1.0,
    configured: tuple[int, int] | None = None,
    stride: int | None = None,
) -> list[dict[str, Any]]:
    """The rows (quantity, value, detail) that summarise a measurement: the chosen t_edit / t_boost (NaN when a
    curve never reaches its threshold) next to the ``configured`` (t_edit, t_boost), the curves at t = 0 / 500 / 999
    and how monotone the strength curve is."""
    nan = float("nan")
    d = curve.distance
    conf = configured or (None, None)
    rising = sum(b >= a for a, b in zip(curve.strength, curve.strength[1:])) / max(len(curve.t) - 1, 1)
    at = {w: " / ".join(f"{value_at(curve, w, t):.3g}" for t in (0, 500, 999)) for w in ("strength", "deficiency")}
    return [
        {
            "quantity": f"t_edit (text cosine {text_cosine:g})",
            "value": nan if t_edit is None else t_edit,
            "detail": f"first t with {d}(x, P_t) >= {edit_threshold * text_cosine:g}; configured t_edit = {conf[0]}",
        },
        {
            "quantity": "t_boost",
            "value": nan if t_boost is None else t_boost,
            "detail": f"first t with {d}(x, x_t) >= {boost_threshold:g}; configured t_boost = {conf[1]}",
        },
        {"quantity": "strength d(x, P_t) at t = 0 / 500 / 999", "value": curve.strength[0], "detail": at["strength"]},
        {
            "quantity": "deficiency d(x, x_t) at t = 0 / 500 / 999",
            "value": curve.deficiency[0],
            "detail": at["deficiency"],
        },
        {
            "quantity": "strength curve monotone (fraction of rising steps)",
            "value": rising,
            "detail": f"{len(curve.t)} timesteps" + (f", stride {stride}" if stride else ""),
        },
    ]


def curve_table(curve: IntervalCurves) -> list[str]:
    """The curves as markdown lines (a "## Curves" section)."""
    lines = ["## Curves", "", "| t | strength | strength_std | deficiency | deficiency_std |", "|---|---|---|---|---|"]
    for i, t in enumerate(curve.t):
        lines.append(
            f"| {t} | {curve.strength[i]:.4g} | {curve.strength_std[i]:.3g} | {curve.deficiency[i]:.4g} | "
            f"{curve.deficiency_std[i]:.3g} |"
        )
    return lines
