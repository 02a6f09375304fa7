"""Import direction and import cycles of ``recsys/``, ``training/`` and ``serving/``, read from the source.

Nothing is imported: every ``.py`` file is parsed with :mod:`ast` and its ``import`` statements
are collected wherever they stand: at module level, inside functions (lazy imports) and inside
``if TYPE_CHECKING:`` blocks. All three count, on purpose:

- the layer rules (no Ray, web stack, data files or disk in ``modules/`` and ``models/``;
  ``recsys/`` never reaches up into ``training/`` or ``serving/``) are about what a module
  depends on, and a lazy import is still a dependency;
- an import cycle is two modules that each need the other, whichever way Python is talked into
  loading them: a base class that imports its subclasses inside a factory function, or a module
  that imports back, under ``TYPE_CHECKING``, the module that calls it, is still a circle.

The model-layer rule checks the layers' own (direct) imports; the ``recsys`` modules they use
answer for theirs. An import of a package's submodule does not count as an import of the
package's ``__init__`` (Python runs it, but no module chose that dependency), and
``from pkg import name`` points at ``pkg.name`` when that is a module, else at ``pkg``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("recsys", "training", "serving")

#: What would pull a process launcher, a web stack or a data-file format into the model layers,
#: and the standard-library modules that touch the disk.
FORBIDDEN_IN_MODEL_LAYERS = (
    "ray",
    "fastapi",
    "starlette",
    "uvicorn",
    "polars",
    "pyarrow",
    "pathlib",
    "os",
    "shutil",
    "sqlite3",
    "tempfile",
)
MODEL_LAYERS = ("recsys.modules", "recsys.models")
#: The console command is the composition root: its handlers start training and serving, so it
#: alone in ``recsys/`` may import them (inside the handlers, never when it is imported).
ENTRY_POINTS = ("recsys.cli",)


@dataclass(frozen=True)
class Import:
    """One imported module name, where it stands, and whether importing the module runs it."""

    target: str
    line: int
    at_import: bool  # outside every function and every ``if TYPE_CHECKING:`` block


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {_module_name(p): p for package in PACKAGES for p in sorted((ROOT / package).rglob("*.py"))}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _walk(nodes: list[ast.stmt] | ast.AST, at_import: bool) -> Iterator[tuple[ast.Import | ast.ImportFrom, bool]]:
    """Every import statement under ``nodes``, and whether it runs when the module is imported."""
    for child in nodes if isinstance(nodes, list) else ast.iter_child_nodes(nodes):
        if isinstance(child, ast.Import | ast.ImportFrom):
            yield child, at_import
        elif isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            yield from _walk(child, False)
        elif isinstance(child, ast.If) and _is_type_checking(child.test):
            yield from _walk(child.body, False)
            yield from _walk(child.orelse, at_import)
        else:
            yield from _walk(child, at_import)


def _resolve_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name of ``from <node.module> import ...`` written in ``module``."""
    if node.level == 0:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """The imports of ``module`` (whose text is ``source``), each target once per line."""
    found: list[Import] = []
    for node, at_import in _walk(ast.parse(source), True):
        if isinstance(node, ast.Import):
            found += [Import(alias.name, node.lineno, at_import) for alias in node.names]
        else:
            base = _resolve_from(node, module, is_package)
            for alias in node.names:
                child = f"{base}.{alias.name}"
                found.append(Import(child if child in MODULES else base, node.lineno, at_import))
    return list(dict.fromkeys(found))


IMPORTS = {
    module: _imports(path.read_text(encoding="utf-8"), module, path.name == "__init__.py")
    for module, path in MODULES.items()
}


def _under(name: str, prefix: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def _where(module: str, imp: Import) -> str:
    return f"{MODULES[module].relative_to(ROOT)}:{imp.line} imports {imp.target}"


def test_every_kind_of_import_is_seen() -> None:
    """The checks are only as good as the parse: module level, nested, lazy, type-only and relative imports."""
    source = """
import os.path
from typing import TYPE_CHECKING
from . import base
try:
    import ray
except ImportError:
    ray = None
if TYPE_CHECKING:
    from recsys.config import ExperimentConfig
else:
    import json
class A:
    import shutil
def f():
    from ..data import dataset
"""
    seen = {(imp.target, imp.at_import) for imp in _imports(source, "recsys.encoders.pipeline")}
    assert seen == {
        ("os.path", True),
        ("typing", True),
        ("recsys.encoders.base", True),
        ("ray", True),
        ("recsys.config", False),
        ("json", True),
        ("shutil", True),
        ("recsys.data.dataset", False),
    }


# --------------------------------------------------------------------------- direction


def test_model_layers_import_no_ray_web_stack_data_files_or_disk() -> None:
    """``recsys/modules/`` and ``recsys/models/`` are tensors in, tensors out."""
    found = [
        _where(module, imp)
        for module, imports in IMPORTS.items()
        if any(_under(module, layer) for layer in MODEL_LAYERS)
        for imp in imports
        if any(_under(imp.target, banned) for banned in FORBIDDEN_IN_MODEL_LAYERS)
    ]
    assert not found, "the model layers import what they must not:\n  " + "\n  ".join(found)


def _upward(imp: Import) -> bool:
    return _under(imp.target, "training") or _under(imp.target, "serving")


def test_recsys_never_imports_training_or_serving() -> None:
    """``recsys/`` is the library; ``training/`` and ``serving/`` are built on it, never the reverse."""
    found = [
        _where(module, imp)
        for module, imports in IMPORTS.items()
        if _under(module, "recsys") and module not in ENTRY_POINTS
        for imp in imports
        if _upward(imp)
    ]
    assert not found, "recsys/ imports upward:\n  " + "\n  ".join(found)


def test_the_command_line_imports_training_and_serving_lazily() -> None:
    """``recsys --help`` and the data commands must not pay for Ray or FastAPI: imports in the handlers only."""
    found = [
        _where(module, imp) for module in ENTRY_POINTS for imp in IMPORTS[module] if imp.at_import and _upward(imp)
    ]
    assert not found, "the command line imports upward when it is imported:\n  " + "\n  ".join(found)


# --------------------------------------------------------------------------- cycles


def _graph() -> dict[str, dict[str, int]]:
    """``{module: {imported module of the three packages: first line}}``, self-imports left out."""
    return {
        module: {
            imp.target: imp.line
            for imp in reversed(imports)  # the first line of each target wins
            if imp.target in MODULES and imp.target != module
        }
        for module, imports in IMPORTS.items()
    }


def _strongly_connected(graph: dict[str, dict[str, int]]) -> list[list[str]]:
    """Tarjan's algorithm (iterative): the groups of more than one module that reach each other, sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> Iterator[str]:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        return iter(sorted(graph[node]))

    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, visit(start))]
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    work.append((child, visit(child)))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while not group or group[-1] != node:
                    group.append(stack.pop())
                    on_stack.discard(group[-1])
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def _closed_path(group: list[str], graph: dict[str, dict[str, int]]) -> list[str]:
    """A shortest closed path from the group's first module back to it, inside the group (breadth-first)."""
    start, members = group[0], set(group)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node]):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [*reversed(path), start]
                if child in members and child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"{group} is not strongly connected")


def _describe(group: list[str], graph: dict[str, dict[str, int]]) -> str:
    """One closed path through the group, then every import between its members (file:line)."""
    members = set(group)
    edges = [
        f"    {MODULES[a].relative_to(ROOT)}:{line} imports {b}"
        for a in group
        for b, line in sorted(graph[a].items())
        if b in members
    ]
    return f"  {' -> '.join(_closed_path(group, graph))}\n" + "\n".join(edges)


def test_cycle_finder_on_a_known_graph() -> None:
    graph = {"a": {"b": 1}, "b": {"c": 1}, "c": {"a": 1, "d": 1}, "d": {}, "e": {"f": 1}, "f": {"e": 1}}
    groups = _strongly_connected(graph)
    assert groups == [["a", "b", "c"], ["e", "f"]]
    assert _closed_path(groups[0], graph) == ["a", "b", "c", "a"]


def test_no_import_cycles() -> None:
    """No module of ``recsys/``, ``training/`` or ``serving/`` reaches itself through its imports.

    Every cycle is reported: each group of modules that reach each other, one closed path
    through it, and every import inside the group with its file and line.
    """
    graph = _graph()
    cycles = [_describe(group, graph) for group in _strongly_connected(graph)]
    if cycles:
        pytest.fail(f"{len(cycles)} import cycle(s):\n" + "\n".join(cycles), pytrace=False)
