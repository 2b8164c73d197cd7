"""The edit plan: which timesteps every walk of one setting visits, as ONE frozen object.

Inversion walks up ``seq_inv`` (n_inv steps from 0 to t0), generation down ``seq_gen`` (n_gen steps from t0); the
h-function acts on generation steps with t >= t_edit, the walk is stochastic (eta = 1) below t_boost, and ``mode``
says how delta_h enters the step (see ``asyrp.samplers.edit_eps``). The inversion cache, the training module,
``samplers.edit``, edit.py, the editor, discover and the sweep all take this object, never its fields one by one,
so no path can walk another grid than the one it was given.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from .schedules import timesteps

SPACINGS = ("official", "uniform")
MODES = ("asyrp", "symmetric", "eps_shift", "x_shift")


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
    spacing ('official': Asyrp's linspace, 'uniform': DDIM's skipping; ``schedules.timesteps``) and mode."""

    n_inv: int = 40
    n_gen: int = 40
    t0: int = 999
    t_edit: int | None = None
    t_boost: int | None = 0
    spacing: str = "official"
    mode: str = "asyrp"

    def __post_init__(self):
        for name in ("n_inv", "n_gen", "t0"):
            object.__setattr__(self, name, int(getattr(self, name)))
        for name in ("t_edit", "t_boost"):
            v = getattr(self, name)
            object.__setattr__(self, name, None if v is None else int(v))
        if self.spacing not in SPACINGS:
            raise ValueError(f"unknown timestep spacing {self.spacing!r}: use one of {SPACINGS}")
        if self.mode not in MODES:
            raise ValueError(f"unknown mode {self.mode!r}: use one of {MODES}")

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

    def eta(self, t: int) -> float:
        """1 (stochastic quality boosting) while t < t_boost, else 0 (deterministic DDIM)."""
        return 1.0 if self.t_boost and t < self.t_boost else 0.0

    def inversion_part(self) -> "EditPlan":
        """What the inversion cache depends on (n_inv, n_gen, t0, spacing): the plan without its edit settings."""
        return EditPlan(n_inv=self.n_inv, n_gen=self.n_gen, t0=self.t0, spacing=self.spacing)


def stored_edit(plan: EditPlan, strength: float) -> dict:
    """The plan as an h-function file records it (its ``edit`` entry; key names kept so earlier files still read)."""
    return {"t_edit": plan.t_edit, "t_boost": plan.t_boost, "n_inv": plan.n_inv, "n_gen": plan.n_gen, "t0": plan.t0,
            "mode": plan.mode, "strength": float(strength), "spacing": plan.spacing}
