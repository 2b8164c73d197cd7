"""Who may import the operational layer (docs/contract.md, "The operational layer"), read from the source, and the
guard that replaces those imports in the core loops (the inversion cache's build stops and names its work through
the guard it is handed)."""
from __future__ import annotations

import ast
import contextlib
from pathlib import Path

import pytest
from helpers import tiny_backbone

from asyrp.data import InversionCache, noise_sources
from asyrp.ops.guard import UNGUARDED
from asyrp.plan import EditPlan
from asyrp.schedules import alphas_cumprod, make_betas

ROOT = Path(__file__).resolve().parents[2]
LEAVES = {"asyrp.ops.errors", "asyrp.ops.io", "asyrp.ops.progress", "asyrp.ops.locks", "asyrp.ops.guard"}
PROCESS = {"asyrp.ops.faults", "asyrp.ops.cli", "asyrp.ops.claims", "asyrp.ops.secrets", "asyrp.ops.lightning",
           "asyrp.ops.hydra_callbacks"}
# the task layer and the entry points inside the package (python -m asyrp.synthfaces.data)
MAY_ACT_ON_THE_PROCESS = ("asyrp.ops", "asyrp.tasks", "asyrp.app", "asyrp.synthfaces.data")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path, me: str | None = None) -> set[str]:
    """Every asyrp name ``path`` (the module ``me``) imports, at the top or inside a function: ``from x import y``
    counts as x and as x.y (y may be a module)."""
    me = me or module_name(path)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            found.add(base)
            found |= {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "asyrp" or m.startswith("asyrp.")}


def sources() -> list[Path]:
    return sorted((ROOT / "asyrp").rglob("*.py"))


def test_the_process_layer_is_imported_only_by_the_task_layer():
    wrong = []
    for path in sources():
        me = module_name(path)
        if me == "asyrp.ops" or me.startswith(MAY_ACT_ON_THE_PROCESS):
            continue
        wrong += [(me, m) for m in imports(path) if any(m == p or m.startswith(p + ".") for p in PROCESS)]
    assert not wrong, wrong


def test_the_leaves_import_only_leaves():
    for path in sources():
        me = module_name(path)
        if me in LEAVES:
            others = {m for m in imports(path) if m not in LEAVES | {"asyrp", "asyrp.ops"}
                      and m.rpartition(".")[0] not in LEAVES}
            assert not others, (me, others)


def test_the_check_sees_a_forbidden_import(tmp_path):
    """The scan itself: a core module importing the faults package (absolute or relative) is found."""
    fake = tmp_path / "probe.py"
    fake.write_text("def f():\n    from ..ops import faults\n    from asyrp.ops.claims import claim_folder\n")
    assert imports(fake, "asyrp.data.probe") >= {"asyrp.ops.faults", "asyrp.ops.claims"}


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
