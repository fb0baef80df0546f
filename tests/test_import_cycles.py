"""No import cycles in ``mlcl``: every module imports, and its ``mlcl`` imports form no cycle.

The import graph is read from the source (``ast``), not from ``sys.modules``, so the result does not depend on the
order in which modules happen to be imported. An edge ``a -> b`` is an ``import mlcl.b`` / ``from mlcl.b import x``
in ``a`` (``from mlcl.p import m`` with ``mlcl.p.m`` a module is an edge to ``mlcl.p.m``). Two graphs are
checked:

* module level: the imports run when the module is imported, including those under ``if TYPE_CHECKING:`` (a
  cycle there is a cycle of the design, hidden from the interpreter only) and in top-level ``try`` / ``if``;
* every import, deferred ones (inside functions) included: a deferred import that closes a cycle hides it
  rather than removing it.

The cycles that are known and not yet broken (other work in progress) are listed in :data:`KNOWN_CYCLES`; the
list may only shrink: a new cycle fails, and so does a listed one that is gone, so that the list is kept exact.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from tests.helpers.paths import REPO

SRC = REPO / "src"

#: Cycles that other work still has to break, each as its sorted modules, with the edge that closes it.
#: Empty: every cycle fails (the last three were broken by moving the shared piece to the module that owns it).
KNOWN_CYCLES: dict[tuple[str, ...], str] = {}


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted((SRC / "mlcl").rglob("*.py")):
        parts = path.relative_to(SRC).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _targets(node: ast.AST, modules: dict[str, Path]) -> Iterator[str]:
    if isinstance(node, ast.Import):
        names = [alias.name for alias in node.names]
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names = [
            f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in modules else node.module
            for alias in node.names
        ]
    elif isinstance(node, ast.ImportFrom):  # a relative import: resolve it as ``from <package> import ...``
        raise AssertionError("relative imports are not used in mlcl; extend the test if they are")
    else:
        names = []
    yield from (n for n in names if n in modules)


def _module_level(body: list[ast.stmt]) -> Iterator[ast.stmt]:
    for node in body:
        yield node
        if isinstance(node, ast.If):
            yield from _module_level(node.body)
            yield from _module_level(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody, *[h.body for h in node.handlers]):
                yield from _module_level(block)


def _graph(*, deferred: bool) -> dict[str, set[str]]:
    modules = _modules()
    graph = {}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        nodes = ast.walk(tree) if deferred else _module_level(tree.body)
        graph[name] = {t for node in nodes for t in _targets(node, modules)} - {name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> set[tuple[str, ...]]:
    """The strongly connected components with more than one module (Tarjan), each as its sorted modules."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: set[tuple[str, ...]] = set()

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.add(tuple(sorted(component)))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def _describe(cycles: set[tuple[str, ...]], graph: dict[str, set[str]]) -> str:
    lines = []
    for cycle in sorted(cycles):
        members = set(cycle)
        edges = [f"{a} -> {b}" for a in cycle for b in sorted(graph[a] & members)]
        lines.append(" / ".join(cycle) + ": " + ", ".join(edges))
    return "; ".join(lines)


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert _cycles(graph) == {("a", "b", "c")}


def test_no_cycle_among_module_level_imports() -> None:
    graph = _graph(deferred=False)
    assert len(graph) > 50  # the whole package was read
    new = _cycles(graph) - set(KNOWN_CYCLES)
    assert not new, f"import cycles among module-level imports: {_describe(new, graph)}"


def test_no_new_cycle_through_deferred_imports() -> None:
    graph = _graph(deferred=True)
    cycles = _cycles(graph)
    new = cycles - set(KNOWN_CYCLES)
    assert not new, f"import cycles (deferred imports included): {_describe(new, graph)}"
    gone = set(KNOWN_CYCLES) - cycles
    assert not gone, f"listed in KNOWN_CYCLES but broken now (remove them): {sorted(gone)}"


def test_every_module_imports() -> None:
    """Every module imports, in turn, in one fresh interpreter (``__main__`` runs the CLI: not imported)."""
    names = sorted(n for n in _modules() if not n.endswith("__main__"))
    code = (
        "import importlib, sys\n"
        f"names = {names!r}\n"
        "bad = []\n"
        "for name in names:\n"
        "    try:\n"
        "        importlib.import_module(name)\n"
        "    except Exception as e:\n"
        "        bad.append(f'{name}: {type(e).__name__}: {e}')\n"
        "print('\\n'.join(bad))\n"
        "sys.exit(1 if bad else 0)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=REPO)
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
