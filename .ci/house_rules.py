"""The house rules of the package code, measured: modules over 400 lines, functions over 60 lines, and import
cycles between subpackages (inspector/, trainer/, gui/, jobs/; tests are not package code).

Run from the repository root: ``python .ci/house_rules.py`` prints one table per rule and exits 1 when any
rule is broken (0 when all hold). Cycles are found on grimp's import graph (import-linter's own graph library),
lazy imports inside functions included, between the top-level packages and between the subpackages or
modules of each package (``inspector.review`` and ``inspector.store`` importing each other is one).
"""

from __future__ import annotations

import ast
import sys
from collections.abc import Iterator
from pathlib import Path

import grimp

PACKAGES = ("inspector", "trainer", "gui", "jobs")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
ROOT = Path(__file__).resolve().parent.parent


def python_files(root: Path = ROOT) -> Iterator[Path]:
    for package in PACKAGES:
        yield from sorted((root / package).rglob("*.py"))


def long_modules(root: Path = ROOT) -> list[tuple[str, int]]:
    rows = []
    for path in python_files(root):
        n = len(path.read_text(encoding="utf-8").splitlines())
        if n > MAX_MODULE_LINES:
            rows.append((str(path.relative_to(root)), n))
    return rows


def long_functions(root: Path = ROOT) -> list[tuple[str, str, int]]:
    """Functions and methods (nested ones on their own) longer than the limit, decorators and docstring
    included, from their ``def`` line to their last line."""
    rows = []
    for path in python_files(root):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
                n = (node.end_lineno or node.lineno) - first + 1
                if n > MAX_FUNCTION_LINES:
                    rows.append((f"{path.relative_to(root)}:{node.lineno}", node.name, n))
    return rows


def _strongly_connected(nodes: list[str], edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one node (each one is an import cycle)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
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
                found.append(sorted(component))

    for v in nodes:
        if v not in index:
            visit(v)
    return found


def import_cycles(root: Path = ROOT) -> list[tuple[str, str]]:
    """(level, 'a -> b -> ... ') for every cycle between the top-level packages, and between the children of
    each package (its subpackages and modules)."""
    sys.path.insert(0, str(root))
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    rows = []
    for parent in ("", *PACKAGES):
        children = sorted(graph.find_children(parent)) if parent else list(PACKAGES)
        edges = {
            a: {b for b in children if a != b and graph.direct_import_exists(importer=a, imported=b, as_packages=True)}
            for a in children
        }
        for component in _strongly_connected(children, edges):
            links = [f"{a} -> {b}" for a in component for b in sorted(edges[a]) if b in component]
            rows.append((parent or "(top level)", "; ".join(links)))
    return rows


def _table(title: str, header: tuple[str, ...], rows: list[tuple[object, ...]]) -> None:
    print(f"\n{title}: {len(rows)}")
    if not rows:
        return
    cells = [tuple(str(c) for c in header), *[tuple(str(c) for c in r) for r in rows]]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    for r in cells:
        print("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())


def main() -> int:
    modules = long_modules()
    functions = long_functions()
    cycles = import_cycles()
    _table(f"modules over {MAX_MODULE_LINES} lines", ("module", "lines"), modules)
    _table(f"functions over {MAX_FUNCTION_LINES} lines", ("where", "function", "lines"), functions)
    _table("import cycles between subpackages", ("in", "imports"), cycles)
    broken = bool(modules or functions or cycles)
    print("\nhouse rules: " + ("BROKEN" if broken else "all hold"))
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
