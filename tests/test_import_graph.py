"""kdistill's import graph: no cycles, every module importable on its own, the core blind to optional tasks.

The graph is read from the source (``ast``), not from ``sys.modules``, so a
cycle is found even where today's import order happens to hide it. Only
imports that run when a module is imported count (module level, class bodies,
``try``/``if`` blocks; ``if TYPE_CHECKING:`` blocks excluded); imports inside
functions run later and are listed separately (:func:`deferred_imports`).

An edge ``a -> b`` means that importing ``a`` imports ``b``: ``import
kdistill.x.y`` and ``from kdistill.x import y`` (``y`` a submodule) also run
the ``__init__`` of every package on the way (``kdistill.x``) unless that
package encloses ``a`` (already being imported when ``a`` runs).
"""

from __future__ import annotations

import ast
import random
import subprocess
import sys
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "kdistill"

# The parts that sit beside the core and register themselves (docs/ARCHITECTURE.md, "Optional tasks")
OPTIONAL = ("kdistill.detection", "kdistill.text", "kdistill.compress.variational", "kdistill.methods.variational")
# The core: it may never import an optional part when it is imported
CORE = ("kdistill.data", "kdistill.models", "kdistill.methods", "kdistill.train", "kdistill.registry",
        "kdistill.errors", "kdistill.config", "kdistill.io", "kdistill.workers", "kdistill.safe_yaml", "kdistill.options",
        "kdistill.eval", "kdistill.distiller", "kdistill.teacher_cache", "kdistill.compress.export",
        "kdistill.compress.load")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def modules() -> dict[str, Path]:
    """Every module of the package, by dotted name."""
    return {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return modules()[name].name == "__init__.py"


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _import_time_nodes(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    """The statements of ``body`` that run on import: not function bodies, not ``if TYPE_CHECKING:``."""
    for node in body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        yield node
        if isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time_nodes(node.body)
            yield from _import_time_nodes(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *(h.body for h in node.handlers)):
                yield from _import_time_nodes(block)
        elif isinstance(node, ast.ClassDef | ast.With | ast.For | ast.While):
            yield from _import_time_nodes(node.body)


def _imported(module: str, node: ast.Import | ast.ImportFrom) -> Iterator[str]:
    """The kdistill modules an import statement in ``module`` names (submodules resolved)."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
        return
    base = node.module or ""
    if node.level:  # relative: from the enclosing package
        package = module if _is_package(module) else module.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{base}" if base else package
    for alias in node.names:
        child = f"{base}.{alias.name}"
        yield child if child in modules() else base


def _targets(module: str, imported: str) -> Iterator[str]:
    """What importing ``imported`` from ``module`` runs: it and its packages not enclosing ``module``."""
    if imported.split(".")[0] != "kdistill":
        return
    parts = imported.split(".")
    for end in range(2, len(parts) + 1):
        name = ".".join(parts[:end])
        encloses = module == name or module.startswith(name + ".")
        if name in modules() and (not encloses or end == len(parts)) and name != module:
            yield name


@cache
def import_graph() -> dict[str, frozenset[str]]:
    """``module -> the kdistill modules importing it imports directly`` (import time only)."""
    graph = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        edges: set[str] = set()
        for node in _import_time_nodes(tree.body):
            if isinstance(node, ast.Import | ast.ImportFrom):
                for imported in _imported(name, node):
                    edges.update(_targets(name, imported))
        graph[name] = frozenset(edges)
    return graph


def _type_checking_nodes(body: list[ast.stmt]) -> set[int]:
    """The ids of the statements inside ``if TYPE_CHECKING:`` blocks (run neither on import nor on call)."""
    found: set[int] = set()
    for node in body:
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            found.update(id(inner) for statement in node.body for inner in ast.walk(statement))
    return found


def deferred_imports() -> dict[str, list[str]]:
    """``module -> kdistill modules it imports inside functions`` (run on call, not on import)."""
    found: dict[str, list[str]] = {}
    for name, path in modules().items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        skip = {id(node) for node in _import_time_nodes(tree.body)} | _type_checking_nodes(tree.body)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in skip:
                targets = [t for imported in _imported(name, node) for t in _targets(name, imported)]
                if targets:
                    found.setdefault(name, []).extend(targets)
    return found


def strongly_connected(graph: dict[str, frozenset[str]]) -> list[list[str]]:
    """The import cycles: every strongly connected set of two or more modules (Tarjan), largest first."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(start: str) -> None:  # iterative, so a deep graph cannot exhaust the recursion limit
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for name in sorted(graph):
        if name not in index:
            visit(name)
    return sorted(found, key=lambda c: (-len(c), c))


def one_cycle(graph: dict[str, frozenset[str]], component: list[str]) -> list[str]:
    """A shortest closed path through the first module of ``component``: ``[a, b, ..., a]``."""
    start, members = component[0], set(component)
    paths = {start: [start]}
    queue = [start]
    while queue:
        node = queue.pop(0)
        for child in sorted(graph[node] & members):
            if child == start:
                return [*paths[node], start]
            if child not in paths:
                paths[child] = [*paths[node], child]
                queue.append(child)
    raise AssertionError(f"{component} is not a cycle")


def _describe(graph: dict[str, frozenset[str]], cycles: list[list[str]]) -> str:
    return "\n".join(f"  {len(c)} modules ({', '.join(c)}), e.g. {' -> '.join(one_cycle(graph, c))}"
                     for c in cycles)


def _in(name: str, parts: tuple[str, ...]) -> bool:
    return any(name == part or name.startswith(part + ".") for part in parts)


# ---------------------------------------------------------------------------------------------- tests


def test_the_graph_reader_finds_cycles_and_ignores_type_checking_blocks() -> None:
    graph = {"a": frozenset({"b"}), "b": frozenset({"c"}), "c": frozenset({"a"}), "d": frozenset({"a"})}
    assert strongly_connected(graph) == [["a", "b", "c"]]
    assert one_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import x\nelse:\n    import y\n"
                     "def f():\n    import z\nclass C:\n    import w\n")
    names = [alias.name for node in _import_time_nodes(tree.body) if isinstance(node, ast.Import)
             for alias in node.names]
    assert names == ["y", "w"]
    # the reader sees real edges of the package (kdistill.models imports its zoo at import time)
    assert "kdistill.models.cnn" in import_graph()["kdistill.models"]


def test_no_import_cycles() -> None:
    graph = import_graph()
    cycles = strongly_connected(graph)
    assert not cycles, f"kdistill's modules import each other in {len(cycles)} cycle(s):\n" + _describe(
        graph, cycles)


# The function-level imports of kdistill modules that remain, each with its reason. Every other import
# of a kdistill module is made when its module is imported, where the cycle check sees it.
DEFERRED_IMPORTS = {
    # the command line imports a command's machinery when that command runs: `kdistill --help` stays fast
    "kdistill.cli.common": "fast --help", "kdistill.cli.demo": "fast --help",
    "kdistill.cli.export": "fast --help", "kdistill.cli.main": "fast --help",
    "kdistill.cli.plugins": "fast --help", "kdistill.cli.predict": "fast --help",
    "kdistill.cli.study": "fast --help", "kdistill.cli.tune": "fast --help",
}

def _with_deferred() -> dict[str, frozenset[str]]:
    graph = dict(import_graph())
    for name, targets in deferred_imports().items():
        graph[name] = graph[name] | frozenset(targets)
    return graph


def test_no_cycles_hidden_in_function_level_imports() -> None:
    """An import moved into a function to dodge a cycle is still a cycle: count those edges too."""
    graph = _with_deferred()
    cycles = strongly_connected(graph)
    assert not cycles, ("counting the imports made inside functions, kdistill's modules import each other "
                        f"in {len(cycles)} cycle(s):\n" + _describe(graph, cycles))


def test_function_level_imports_of_kdistill_only_where_documented() -> None:
    undocumented = sorted(set(deferred_imports()) - set(DEFERRED_IMPORTS))
    assert not undocumented, ("these modules import kdistill modules inside functions; import at the top "
                              "(a cycle then shows in test_no_import_cycles) or document the reason in "
                              f"DEFERRED_IMPORTS: {', '.join(undocumented)}")
    gone = sorted(set(DEFERRED_IMPORTS) - set(deferred_imports()))
    assert not gone, f"no function-level kdistill imports left in {', '.join(gone)}: remove them from the list"


def test_the_core_imports_no_optional_part() -> None:
    """data, models, methods, train and the top-level core modules load without detection, text or the
    variational student (those register themselves from their own packages)."""
    graph = import_graph()
    reached: dict[str, list[str]] = {}
    for name in graph:
        if _in(name, CORE) and not _in(name, OPTIONAL):
            for target in graph[name]:
                if _in(target, OPTIONAL):
                    reached.setdefault(name, []).append(target)
    assert not reached, "core modules import optional parts when imported:\n" + "\n".join(
        f"  {name} -> {', '.join(sorted(targets))}" for name, targets in sorted(reached.items()))


_IMPORT_ALL = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as error:
        print(f"{name}: {type(error).__name__}: {error}")
        raise SystemExit(1)
"""


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_module_imports_in_a_fresh_interpreter_in_any_order(seed: int) -> None:
    """Each module imported first of all, in a shuffled order: an import that works only after some
    other module loaded first fails here."""
    names = sorted(name for name in modules() if not name.endswith(".__main__"))  # that one runs the CLI
    random.Random(seed).shuffle(names)
    result = subprocess.run([sys.executable, "-c", _IMPORT_ALL, *names], cwd=ROOT, capture_output=True,
                            text=True, timeout=120, env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1",
                                                          "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, f"order seed {seed}: {result.stdout}{result.stderr[-3000:]}"


if __name__ == "__main__":  # a report of the graph: python tests/test_import_graph.py
    graph = import_graph()
    cycles = strongly_connected(graph)
    print(f"{len(graph)} modules, {sum(map(len, graph.values()))} import-time edges, {len(cycles)} cycle(s)")
    print(_describe(graph, cycles))
    deferred = deferred_imports()
    print(f"{sum(map(len, deferred.values()))} function-level kdistill imports in {len(deferred)} modules")
    full = dict(graph)
    for name, targets in deferred.items():
        full[name] = full[name] | frozenset(targets)
    every = strongly_connected(full)
    print(f"counting them: {len(every)} cycle(s)")
    print(_describe(full, every))
