"""The guard that a task hands to a core loop instead of the loop importing the faults package (docs/contract.md,
"The operational layer"): the inversion cache's build stops and names its work through the guard it is handed.
Who may import what is tests/unit/test_layers.py."""

from __future__ import annotations

import contextlib

import pytest
from helpers import tiny_backbone

from asyrp.data import InversionCache, noise_sources
from asyrp.ops.guard import UNGUARDED
from asyrp.plan import EditPlan
from asyrp.schedules import alphas_cumprod, make_betas


class StopAfter:
    """A guard that asks to stop at the ``n``-th safe point and records what the loop said it was doing."""

    def __init__(self, n: int):
        self.n, self.calls, self.said = n, 0, []

    def stop(self, done: str) -> None:
        self.calls += 1
        if self.calls >= self.n:
            raise KeyboardInterrupt(done)

    def stop_asked(self) -> bool:
        return self.calls >= self.n

    def doing(self, what, batch_key=None, batch=None):
        self.said.append(what)
        return contextlib.nullcontext()

    def take_signals(self) -> None:
        pass


def test_the_cache_build_stops_at_the_guards_safe_point_with_finished_entries_kept(tmp_path):
    a = alphas_cumprod(make_betas("linear"))
    guard = StopAfter(2)
    cache = InversionCache(tmp_path, tiny_backbone(), a, EditPlan(n_inv=2, n_gen=2), batch_size=1, guard=guard)
    src = noise_sources(0, 3)
    with pytest.raises(KeyboardInterrupt, match="1 of the 3 new inversion-cache entries are in"):
        cache.build(src)
    assert guard.said == [f"building the inversion cache (entries 1-1 of 3, in {cache.dir})"]
    assert len(cache.missing(src)) == 2  # the entry of the first batch is on disk
    done = InversionCache(tmp_path, cache.backbone, a, EditPlan(n_inv=2, n_gen=2), batch_size=1, guard=UNGUARDED)
    done.build(src)
    assert not done.missing(src)
