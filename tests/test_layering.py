"""The package's layers: no folder imports a folder that imports it back (directly or through others), and the shared
run infrastructure (``fastweights.runs``) imports no task. Read from the source (every import, also those inside
functions), so an import added anywhere is caught."""

from __future__ import annotations

import ast
from pathlib import Path

import fastweights

ROOT = Path(fastweights.__file__).parent
#: What ``fastweights.runs`` may import: the package's lowest modules only.
RUNS_MAY_IMPORT = {"runs", "fields", "__version__"}


def _unit(module: str) -> str:
    """``fastweights.ops.common.spec`` -> ``ops``; a top-level module is its own unit."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "fastweights"


def _imports() -> dict[str, set[tuple[str, str]]]:
    """unit -> {(imported unit, importing module)} over every import of fastweights by fastweights."""
    edges: dict[str, set[tuple[str, str]]] = {}
    for path in ROOT.rglob("*.py"):
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        module = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        package = module if parts[-1] == "__init__" else module.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                if target == "fastweights" or not node.module:  # `from fastweights import ops`: the submodule
                    targets = [f"{target}.{a.name}" for a in node.names]
                else:
                    targets = [target]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for target in targets:
                if target.startswith("fastweights.") and _unit(target) != _unit(module):
                    edges.setdefault(_unit(module), set()).add((_unit(target), module))
    return edges


def _reaches(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph.get(todo.pop(), ()):
            if nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_no_import_circle_across_folders():
    edges = _imports()
    graph = {unit: {target for target, _ in targets} for unit, targets in edges.items()}
    circles = sorted(unit for unit in graph if unit in _reaches(graph, unit))
    where = {unit: sorted(f"{module} -> {target}" for target, module in edges[unit] if unit in _reaches(graph, target))
             for unit in circles}
    assert not circles, where


def test_runs_imports_no_task():
    imported = {target: module for target, module in _imports().get("runs", ())}
    assert set(imported) <= RUNS_MAY_IMPORT, {t: m for t, m in imported.items() if t not in RUNS_MAY_IMPORT}


def test_the_checker_sees_imports_inside_functions():
    """The checker is not blind: the task registry imports the training code only inside methods."""
    assert ("train", "fastweights.tasks.algorithmic") in _imports()["tasks"]
