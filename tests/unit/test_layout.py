"""The house rules, read from the source with ``ast``: twins/ and checks/ never import
flows/ or Prefect, flows modules import each other without a cycle, and every function
is shorter than 60 lines."""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACKAGES = {
    "restoredrill": REPO / "restoredrill",
    "restoredrill.flows": REPO / "flows",
    "restoredrill.twins": REPO / "twins",
    "restoredrill.checks": REPO / "checks",
}
"""Each import package and the folder it is installed from (pyproject's package-dir)."""
LONGEST = 59
"""The most lines a function may take, ``def`` to its last line."""


@functools.cache
def parsed(path: Path) -> ast.Module:
    """The syntax tree of a source file (read once for all the rules below)."""
    return ast.parse(path.read_text(), str(path))


def modules(package: str) -> Iterator[tuple[str, Path]]:
    """(dotted name, file) of every module of ``package``, subpackages included."""
    root = PACKAGES[package]
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join((package, *parts)), path


def imported(name: str, path: Path, known: set[str] | None = None) -> set[str]:
    """Every module ``path`` imports, anywhere in it (lazy imports too), as dotted names.
    With ``known`` (the modules of a package): only imports at run time (not those under
    ``if TYPE_CHECKING:``), and ``from .x import y`` gives ``pkg.x.y`` if that is a known
    module, else ``pkg.x``; without, both."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    tree = parsed(path)
    typing_only = {
        id(inner)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for stmt in node.body
        for inner in ast.walk(stmt)
    }
    found: set[str] = set()
    for node in ast.walk(tree):
        if known is not None and id(node) in typing_only:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join([*base, *([node.module] if node.module else [])])
            else:
                module = node.module or ""
            names = {f"{module}.{alias.name}" for alias in node.names}
            submodules = names & known if known is not None else names
            found |= submodules if submodules else {module}
            if known is None:
                found.add(module)
    return found


@pytest.mark.parametrize("package", ["restoredrill.twins", "restoredrill.checks"])
def test_twins_and_checks_never_import_flows_or_prefect(package: str) -> None:
    """twins/ and checks/ are plain libraries: no run, no Prefect."""
    found = [
        f"{path.relative_to(REPO)} imports {module}"
        for name, path in modules(package)
        for module in sorted(imported(name, path))
        if module.split(".")[0] == "prefect" or module.startswith("restoredrill.flows")
    ]
    assert found == []


def test_the_rule_sees_lazy_and_relative_imports(tmp_path: Path) -> None:
    """The reader above catches what a newcomer might write (so the rule cannot pass blind)."""
    path = tmp_path / "sneaky.py"
    path.write_text("def f():\n    from ..flows import verify\n    import prefect.flows\n")
    assert {"restoredrill.flows", "restoredrill.flows.verify", "prefect.flows"} <= imported(
        "restoredrill.twins.sneaky", path
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The import cycles of ``graph`` (its strongly connected parts of two or more)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in sorted(graph[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            part = []
            while (top := stack.pop()) != node:
                part.append(top)
            if part:
                found.append(sorted([node, *part]))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_flows_modules_import_each_other_without_a_cycle() -> None:
    names = dict(modules("restoredrill.flows"))
    graph = {
        name: {m for m in imported(name, path, set(names)) if m in names and m != name}
        for name, path in names.items()
    }
    assert cycles(graph) == KNOWN_CYCLES
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


KNOWN_CYCLES: list[list[str]] = []
"""Cycles left as they are, each with why (none: the evidence store, the chain, its rows
and the signing key were untangled by moving the tables, the records rebuilt from rows and
the errors into modules of their own, and the verify helper's entry into chain_worker.py)."""


def test_the_cycle_rule_sees_a_cycle_through_a_lazy_import(tmp_path: Path) -> None:
    """An import inside a function (as evidence.py once imported chain.py) is an edge too."""
    (tmp_path / "a.py").write_text("from . import b\n")
    (tmp_path / "b.py").write_text("def f():\n    from .a import g\n")
    names = {"pkg.a": tmp_path / "a.py", "pkg.b": tmp_path / "b.py"}
    graph = {
        name: {m for m in imported(name, path, set(names)) if m in names and m != name}
        for name, path in names.items()
    }
    assert cycles(graph) == [["pkg.a", "pkg.b"]]


EXEMPT: dict[str, str] = {}
"""Long functions left as they are, each with why (none now). The list must stay exact."""


def test_every_function_is_shorter_than_60_lines() -> None:
    long = []
    for package in PACKAGES:
        for _, path in modules(package):
            shown = str(path.relative_to(REPO))
            for node in ast.walk(parsed(path)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    lines = (node.end_lineno or node.lineno) - node.lineno + 1
                    if lines > LONGEST:
                        long.append(f"{shown}:{node.name}")
    assert sorted(set(long) - set(EXEMPT)) == []
    assert sorted(set(EXEMPT) - set(long)) == []  # an exempt function made short leaves the list
