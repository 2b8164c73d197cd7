"""The layers of asyrp (docs/contract.md, "Layers"), read from the source: every import in asyrp/, at the top or
inside a function, goes to the importer's own layer or one below it, and no group of modules imports itself round in a
circle. Also the two rules of the operational layer: its process part is used only by the task layer and entry points,
and its leaves import only leaves."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

# lowest first; a module belongs to the layer of its longest matching prefix
LAYERS: list[tuple[str, tuple[str, ...]]] = [
    (
        "foundation",
        (
            "asyrp.ops.errors",
            "asyrp.ops.io",
            "asyrp.ops.progress",
            "asyrp.ops.locks",
            "asyrp.ops.guard",
            "asyrp.config",
            "asyrp.schedules",
        ),
    ),
    ("networks", ("asyrp.backbones",)),
    ("method", ("asyrp.plan", "asyrp.ddim", "asyrp.samplers", "asyrp.hfunctions", "asyrp.perf", "asyrp.masks")),
    (
        "parts",
        (
            "asyrp.clip",
            "asyrp.losses",
            "asyrp.keep",
            "asyrp.probes",
            "asyrp.guide",
            "asyrp.classifier",
            "asyrp.twins",
            "asyrp.metrics",
            "asyrp.data",
            "asyrp.interval",
            "asyrp.directions",
            "asyrp.grid",
            "asyrp.checks",
            "asyrp.module",
            "asyrp.callbacks",
            "asyrp.constraints",
        ),
    ),
    ("assembly", ("asyrp.build", "asyrp.editor", "asyrp.synthfaces")),
    # the task layer and the entry points inside the package (python -m asyrp.synthfaces.data)
    ("tasks", ("asyrp.tasks", "asyrp.experiment", "asyrp.app", "asyrp.ops", "asyrp.synthfaces.data")),
]
NAMESPACES = {"asyrp", "asyrp.ops"}  # packages whose __init__ imports nothing: importing them costs no layer
LEAVES = set(LAYERS[0][1]) - {"asyrp.config", "asyrp.schedules"}
PROCESS = (
    "asyrp.ops.faults",
    "asyrp.ops.cli",
    "asyrp.ops.claims",
    "asyrp.ops.secrets",
    "asyrp.ops.lightning",
    "asyrp.ops.hydra_callbacks",
)
# the task layer and the entry points inside the package (python -m asyrp.synthfaces.data)
MAY_ACT_ON_THE_PROCESS = ("asyrp.ops", "asyrp.tasks", "asyrp.app", "asyrp.experiment", "asyrp.synthfaces.data")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(source: str, me: str, is_package: bool) -> set[str]:
    """Every asyrp name the module ``me`` imports: ``from x import y`` counts as x and as x.y (y may be a module)."""
    package = me if is_package else me.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(up + ([base] if base else []))
            found |= {base} | {f"{base}.{a.name}" for a in node.names}
    return {m for m in found if m == "asyrp" or m.startswith("asyrp.")}


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((ROOT / "asyrp").rglob("*.py"))}


def import_graph() -> dict[str, set[str]]:
    """Module -> the asyrp modules it imports (a name that is not a module counts as the module that holds it)."""
    mods = modules()
    graph = {}
    for me, path in mods.items():
        deps = set()
        for name in imported_names(path.read_text(), me, path.name == "__init__.py"):
            while name and name not in mods:
                name = name.rpartition(".")[0]
            if name and name != me and not me.startswith(name + "."):  # a submodule runs its package's __init__
                deps.add(name)
        graph[me] = deps
    return graph


def layer_of(module: str) -> int | None:
    best = None
    for i, (_, prefixes) in enumerate(LAYERS):
        for p in prefixes:
            if (module == p or module.startswith(p + ".")) and (best is None or len(p) >= best[1]):
                best = (i, len(p))
    return None if best is None else best[0]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Groups of modules that import each other round in a circle (strongly connected components of > 1)."""
    index, low, stack, on, found = {}, {}, [], set(), []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def upward_imports(graph: dict[str, set[str]]) -> list[tuple[str, str]]:
    return [
        (me, dep)
        for me, deps in sorted(graph.items())
        for dep in sorted(deps - NAMESPACES)
        if layer_of(dep) > layer_of(me)
    ]


def test_every_module_has_a_layer():
    assert [m for m in modules() if m not in NAMESPACES and layer_of(m) is None] == []


def test_no_import_circle():
    assert cycles(import_graph()) == []


def test_no_import_from_a_lower_layer_to_a_higher_one():
    assert upward_imports(import_graph()) == []


def test_the_process_layer_is_imported_only_by_the_task_layer():
    wrong = [
        (me, dep)
        for me, deps in import_graph().items()
        if not me.startswith(MAY_ACT_ON_THE_PROCESS)
        for dep in deps
        if dep.startswith(PROCESS)
    ]
    assert wrong == []


def test_the_leaves_import_only_leaves():
    graph = import_graph()
    assert {me: graph[me] - LEAVES - NAMESPACES for me in LEAVES if graph[me] - LEAVES - NAMESPACES} == {}


def test_the_checks_see_what_they_forbid():
    """The scan (relative and absolute, at the top or inside a function), the circle finder and the layer rule."""
    src = "from ..tasks.edit import edit\ndef f():\n    from asyrp.ops.claims import claim_folder\n"
    assert imported_names(src, "asyrp.data.probe", False) == {
        "asyrp.tasks.edit",
        "asyrp.tasks.edit.edit",
        "asyrp.ops.claims",
        "asyrp.ops.claims.claim_folder",
    }
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert upward_imports({"asyrp.samplers": {"asyrp.tasks.edit"}, "asyrp.tasks.edit": {"asyrp.samplers"}}) == [
        ("asyrp.samplers", "asyrp.tasks.edit")
    ]
