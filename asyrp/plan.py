"""The edit plan: which timesteps every walk of one setting visits, as ONE frozen object.

Inversion walks up ``seq_inv`` (n_inv steps from 0 to t0), generation down ``seq_gen`` (n_gen steps from t0); the
h-function acts on generation steps with t >= t_edit, the walk is stochastic (eta = 1) below t_boost, and ``mode``
says how delta_h enters the step (see ``asyrp.samplers.edit_eps``). The inversion cache, the training module,
``samplers.edit``, edit.py, the editor, discover and the sweep all take this object, never its fields one by one,
so no path can walk another grid than the one it was given.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import TYPE_CHECKING, Any

from .config import as_float, as_int
from .ops.errors import AsyrpUserError
from .schedules import timesteps

if TYPE_CHECKING:
    from torch import nn

SPACINGS = ("official", "uniform")
MODES = ("asyrp", "symmetric", "eps_shift", "x_shift")
HOLD_MODES = ("asyrp", "eps_shift")  # the modes whose step has P_t^edit and P_t^orig side by side


def inversion_pairs(seq: Sequence[int]) -> list[tuple[int, int]]:
    """(t, t_next) for deterministic inversion along an increasing sequence: the network is evaluated at t."""
    return list(zip(seq[:-1], seq[1:]))


def generation_pairs(seq: Sequence[int]) -> list[tuple[int, int]]:
    """(t, t_next) for generation down an increasing sequence, ending with (seq[0], -1)."""
    down = list(reversed(seq))
    return list(zip(down, down[1:] + [-1]))


@dataclass(frozen=True)
class EditPlan:
    """n_inv, n_gen, t0 (1000-step scale), t_edit (None: no edit steps), t_boost (0 or None: no boosting),
    spacing ('official': Asyrp's linspace, 'uniform': DDIM's skipping; ``schedules.timesteps``), mode, and the P_t
    hold: ``hold`` (None or 0: off) keeps P_t^orig wherever the edit changes P_t by at most ``hold`` x its largest
    change on that image (the region grown by ``hold_dilate`` pixels; ``masks.held_eps``)."""

    n_inv: int = 40
    n_gen: int = 40
    t0: int = 999
    t_edit: int | None = None
    t_boost: int | None = 0
    spacing: str = "official"
    mode: str = "asyrp"
    hold: float | None = None
    hold_dilate: int = 2

    def __post_init__(self):
        for name in ("n_inv", "n_gen", "t0", "hold_dilate"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("t_edit", "t_boost"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else int(v))
        if self.spacing not in SPACINGS:
            raise ValueError(f"unknown timestep spacing {self.spacing!r}: use one of {SPACINGS}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: use one of {MODES}")
        object.__setattr__(self, "hold", float(self.hold) if self.hold else None)  # 0 = off, as None

    @property
    def seq_inv(self) -> list[int]:
        return timesteps(self.n_inv, self.t0, self.spacing)

    @property
    def seq_gen(self) -> list[int]:
        return timesteps(self.n_gen, self.t0, self.spacing)

    def inversion(self) -> list[tuple[int, int]]:
        return inversion_pairs(self.seq_inv)

    def generation(self) -> list[tuple[int, int]]:
        return generation_pairs(self.seq_gen)

    def edit_steps(self) -> list[tuple[int, int, int]]:
        """(index into the generation walk, t, t_next) of every step with t >= t_edit, from T down."""
        if self.t_edit is None:
            return []
        return [(k, t, tn) for k, (t, tn) in enumerate(self.generation()) if t >= self.t_edit]

    def passes(self) -> tuple[int, int]:
        """(encoder, decoder) network passes per edited image, the inversion included (once per image when cached and
        shared by several strengths): one full pass per inversion and generation step, and in mode asyrp a second
        decoder row per editing step (P_t sees h + delta_h, D_t sees h); the bench counts the same floor."""
        inv, gen = len(self.inversion()), len(self.generation())
        extra = len(self.edit_steps()) if self.mode == "asyrp" else 0
        return inv + gen, inv + gen + extra

    def eta(self, t: int) -> float:
        """1 (stochastic quality boosting) while t < t_boost, else 0 (deterministic DDIM)."""
        return 1.0 if self.t_boost and t < self.t_boost else 0.0

    def inversion_part(self) -> EditPlan:
        """What the inversion cache depends on (n_inv, n_gen, t0, spacing): the plan without its edit settings."""
        return EditPlan(n_inv=self.n_inv, n_gen=self.n_gen, t0=self.t0, spacing=self.spacing)


def stored_edit(plan: EditPlan, strength: float) -> dict:
    """The plan as an h-function file records it (its ``edit`` entry; key names kept so earlier files still read)."""
    return {
        "t_edit": plan.t_edit,
        "t_boost": plan.t_boost,
        "n_inv": plan.n_inv,
        "n_gen": plan.n_gen,
        "t0": plan.t0,
        "mode": plan.mode,
        "strength": float(strength),
        "spacing": plan.spacing,
        "hold": plan.hold,
        "hold_dilate": plan.hold_dilate,
    }


# -- the user's values, checked --------------------------------------------------------------------------------
_KEYS = {k: f"plan.{k}" for k in ("n_inv", "n_gen", "t0", "t_edit", "t_boost")}


def check_schedule(
    n_inv: int, n_gen: int, t0: int, t_edit: int | None, t_boost: int | None, keys: Mapping[str, str] | None = None
) -> None:
    """Impossible step settings, caught before anything runs; ``keys`` names the config keys in the messages."""
    K = dict(_KEYS, **(keys or {}))
    t0 = as_int(t0, K["t0"])
    if not (0 < t0 <= 999):
        raise AsyrpUserError(
            f"t0={t0} is outside the schedule: it must be in 1..999 (the 1000-step scale): set {K['t0']}"
        )
    for name, v in (("n_inv", n_inv), ("n_gen", n_gen)):
        if as_int(v, K[name]) < 2:
            raise AsyrpUserError(
                f"n_inv={n_inv} and n_gen={n_gen} must both be >= 2 (a DDIM walk needs two timesteps): set {K[name]}"
            )
    if t_edit is None:
        raise AsyrpUserError(f"{K['t_edit']} is not set: choose a plan config (conf/plan) or pass {K['t_edit']}=<t>")
    t_edit = as_int(t_edit, K["t_edit"])
    if not (0 <= t_edit <= t0):
        raise AsyrpUserError(
            f"t_edit={t_edit} is outside the schedule [0, t0={t0}]: edits happen while t >= t_edit, "
            f"so set {K['t_edit']} <= {K['t0']}"
        )
    if t_boost is not None:
        t_boost = as_int(t_boost, K["t_boost"])
        if not (0 <= t_boost <= t0):
            raise AsyrpUserError(f"t_boost={t_boost} is outside the schedule [0, t0={t0}]: set {K['t_boost']}")
        if t_boost > t_edit:
            raise AsyrpUserError(
                f"t_boost={t_boost} is above t_edit={t_edit}: quality boosting (t < t_boost) must start "
                f"after the editing interval (t >= t_edit) ends; set {K['t_boost']} <= {K['t_edit']}"
            )


def check_mode(mode: Any, key: str) -> None:
    if mode is not None and mode not in MODES:
        raise AsyrpUserError(f"{key}={mode!r} is not one of {', '.join(MODES)}")


def check_hold(hold: Any, dilate: Any, mode: str, keys: Mapping[str, str]) -> None:
    """The P_t hold's settings: a fraction in [0, 1) (0 = off), a dilation >= 0, a mode with two noise predictions."""
    h = as_float(hold, keys["hold"]) if hold is not None else 0.0
    if not 0 <= h < 1:
        raise AsyrpUserError(
            f"{keys['hold']}={hold} must be in [0, 1): the share of an image's largest change of P_t below which a "
            "pixel keeps P_t^orig (0 = no hold)"
        )
    as_int(dilate, keys["hold_dilate"], 0)
    if h and mode not in HOLD_MODES:
        raise AsyrpUserError(
            f"{keys['hold']}={hold} needs {keys['mode']} in {', '.join(HOLD_MODES)} (P_t^edit and P_t^orig side by "
            f"side); mode {mode} has one prediction: set {keys['hold']}=0"
        )


# -- a composition of h-functions trained on different intervals: each in its own window ------------------------
def own_intervals(edits: Sequence[Mapping[str, Any]]) -> list[dict[str, int]] | None:
    """The stored edit settings of several h-functions -> one window [t0, t_edit] per function when they differ
    (None when they agree or one has no t_edit): a composition then lets each act where it was trained. ``n_needed``
    is the step count a walk from the highest t0 needs to keep that function's steps per unit of t."""
    if len(edits) < 2 or any(e.get("t_edit") is None for e in edits):
        return None
    spans = [(int(e.get("t0", 999)), int(e["t_edit"]), int(e.get("n_gen", 40))) for e in edits]
    if len({s[:2] for s in spans}) == 1:
        return None
    t0_max = max(t0 for t0, _, _ in spans)
    return [{"t0": t0, "t_edit": te, "n_gen": n, "n_needed": -(-n * t0_max // t0)} for t0, te, n in spans]


def own_intervals_walk(windows: Sequence[Mapping[str, int]]) -> dict[str, int]:
    """The walk such a composition needs: from the highest t0 to the lowest t_edit, at the densest function's steps."""
    n = max(w["n_needed"] for w in windows)
    return {"t0": max(w["t0"] for w in windows), "t_edit": min(w["t_edit"] for w in windows), "n_inv": n, "n_gen": n}


def step_scales(windows: Sequence[Mapping[str, int]], t0: int, n_gen: int) -> list[float]:
    """Per window, the factor on its function's coefficient that keeps the trained effect per unit of t on a walk of
    ``n_gen`` steps from ``t0`` (delta_h acts once per step: new t per step / trained t per step)."""
    return [(t0 / n_gen) / (w["t0"] / w["n_gen"]) for w in windows]


def in_own_intervals(fns: Sequence[nn.Module], windows: Sequence[Mapping[str, int]]) -> list[nn.Module]:
    """Each function switched on only in its window (``own_intervals``)."""
    from .hfunctions.modules import TimeWindow

    return [TimeWindow(f, w["t0"], w["t_edit"]) for f, w in zip(fns, windows)]


# -- the one resolver ------------------------------------------------------------------------------------------
FIELDS = tuple(f.name for f in fields(EditPlan))


def resolve_plan(
    given: Mapping[str, Any],
    stored: Sequence[Mapping[str, Any]] = (),
    interval: Mapping[str, Any] | None = None,
    *,
    key_prefix: str = "plan.",
) -> tuple[EditPlan, list[dict[str, Any]] | None]:
    """The plan of an edit with h-function files: each field as ``given`` (the config; None = not given), else as
    stored in the first file (its ``edit`` entry), else the interval preset's (t_edit, t_boost), else EditPlan's
    default. Several files stored with different intervals and neither t0 nor t_edit given: each function acts in its
    own window (``own_intervals``, each with its ``step_scale``) on one walk that covers them all; else windows is
    None. The P_t hold of a composition is the first file's that has one (it acts on the summed change). Impossible
    values raise one AsyrpUserError naming the key (``key_prefix`` + field)."""
    windows = None if given.get("t0") is not None or given.get("t_edit") is not None else own_intervals(stored)
    first = dict(stored[0]) if stored else {}
    held = next((e for e in stored if e.get("hold")), None)  # a composition holds P_t when one of its files does
    if held is not None and not first.get("hold"):
        first.update(hold=held["hold"], hold_dilate=held.get("hold_dilate"))
    if windows:
        first.update(own_intervals_walk(windows))
    defaults = {f.name: f.default for f in fields(EditPlan)} | {"t_boost": None}  # no boost unless a source has one

    def pick(k: str) -> Any:
        for src in (given, first, interval or {}):
            if src.get(k) is not None:
                return src[k]
        return defaults[k]

    v = {k: pick(k) for k in FIELDS}
    keys = {k: key_prefix + k for k in FIELDS}
    check_schedule(v["n_inv"], v["n_gen"], v["t0"], v["t_edit"], v["t_boost"], keys=keys)
    check_mode(v["mode"], keys["mode"])
    check_hold(v["hold"], v["hold_dilate"], v["mode"], keys)
    if v["spacing"] not in SPACINGS:
        raise AsyrpUserError(f"{keys['spacing']}={v['spacing']!r} must be official (Asyrp's linspace) or uniform")
    plan = EditPlan(**v)
    for w, scale in zip(windows or [], step_scales(windows or [], plan.t0, plan.n_gen)):
        w["step_scale"] = scale
    return plan, windows


def plan_of(group: Mapping[str, Any]) -> EditPlan:
    """The plan a complete ``plan`` config group gives (train, discover), checked; t_boost null = 0 (no boosting)."""
    plan, _ = resolve_plan({k: group.get(k) for k in FIELDS})
    return replace(plan, t_boost=plan.t_boost or 0)
