"""The task layer is the top of the library: nothing in asyrp below it imports asyrp.tasks (docs/contract.md,
"Training"); read from the source, imports inside functions included."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ABOVE_THE_TASKS = ("asyrp.tasks", "asyrp.experiment")  # the tasks themselves, and the experiment world over them


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(source: str, me: str, is_package: bool) -> set[str]:
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
    return found


def _task_imports(source: str, me: str, is_package: bool = False) -> set[str]:
    return {m for m in _imports(source, me, is_package) if m == "asyrp.tasks" or m.startswith("asyrp.tasks.")}


def test_nothing_below_the_tasks_imports_them():
    wrong = {}
    for path in sorted((ROOT / "asyrp").rglob("*.py")):
        me = _module(path)
        if me.startswith(ABOVE_THE_TASKS):
            continue
        found = _task_imports(path.read_text(), me, path.name == "__init__.py")
        if found:
            wrong[me] = sorted(found)
    assert not wrong, wrong


def test_the_scan_sees_a_task_import():
    """Relative and absolute, at the top or inside a function."""
    src = "from ..tasks.edit import edit\ndef f():\n    from asyrp.tasks import train\n"
    assert _task_imports(src, "asyrp.data.probe") == {"asyrp.tasks", "asyrp.tasks.edit", "asyrp.tasks.edit.edit",
                                                     "asyrp.tasks.train"}
