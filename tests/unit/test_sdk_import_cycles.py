"""The SDK's modules import each other in layers: no cycle, not even through a function.

The graph is read from the source with :mod:`ast`: every ``import`` and
``from ... import`` counts, at module level, inside functions and under
``if TYPE_CHECKING:``, since a function-level import that closes a cycle is
still a cycle, only one that fails later. And the notebook side loads no more
of the worker and replica runtime than the wrappers it pickles.
"""

from __future__ import annotations

import ast
import itertools
import subprocess
import sys
from pathlib import Path

import pytest

import cobalt

pytestmark = pytest.mark.unit

Edges = dict[str, dict[str, str]]
"""For each module, the modules it imports, each with where (``file:line``)."""


def module_names(root: Path, package: str) -> dict[str, Path]:
    """Every module of the package under ``root``, by dotted name."""
    names = {}
    for path in sorted(root.rglob("*.py")):
        parts = [package, *path.relative_to(root).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool) -> list[str]:
    """The dotted names an import statement in ``module`` loads."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, one level up per extra dot
        anchor = module.split(".")[: None if is_package else -1]
        anchor = anchor[: len(anchor) - node.level + 1]
        base = ".".join([*anchor, base] if base else anchor)
    return [f"{base}.{alias.name}" for alias in node.names] + [base]


def import_graph(modules: dict[str, Path]) -> Edges:
    """Who imports whom among ``modules``. ``from a import b`` is an import of
    module ``a.b`` where there is one, else of ``a``, which defines ``b``."""
    edges: Edges = {name: {} for name in modules}
    for name, path in modules.items():
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            names = _imported(node, name, path.name == "__init__.py")
            if isinstance(node, ast.ImportFrom):
                *members, base = names
                names = [m if m in modules else base for m in members]
            for target in names:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges[name].setdefault(target, f"{path.name}:{node.lineno}")
    return edges


def find_cycle(edges: Edges) -> list[str]:
    """One import cycle as ``[a, b, ..., a]``, or ``[]`` when the graph has none."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str]:
        state[node] = 1
        path.append(node)
        for nxt in sorted(edges.get(node, {})):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return []

    for start in sorted(edges):
        if start not in state:
            cycle = visit(start)
            if cycle:
                return cycle
    return []


def describe(cycle: list[str], edges: Edges) -> str:
    steps = [f"{a} -> {b} ({edges[a][b]})" for a, b in itertools.pairwise(cycle)]
    return "import cycle:\n  " + "\n  ".join(steps)


def test_the_sdk_has_no_import_cycle() -> None:
    root = Path(cobalt.__file__).parent
    edges = import_graph(module_names(root, "cobalt"))
    assert len(edges) > 40, "the SDK's modules were not found"
    cycle = find_cycle(edges)
    assert not cycle, describe(cycle, edges)


def test_a_cycle_closed_by_a_function_level_import_is_found(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.sub import b\n")
    (package / "sub" / "b.py").write_text("from . import c\n")
    (package / "sub" / "c.py").write_text("def late():\n    from pkg import a\n")
    (package / "leaf.py").write_text("import pkg.a\n")

    edges = import_graph(module_names(package, "pkg"))

    assert find_cycle(edges) == ["pkg.a", "pkg.sub.b", "pkg.sub.c", "pkg.a"]
    assert "pkg.sub.c -> pkg.a (c.py:2)" in describe(find_cycle(edges), edges)


def test_a_layered_package_has_no_cycle(tmp_path: Path) -> None:
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("from pkg.top import run\n")
    (package / "top.py").write_text(
        "from pkg import low\n\ndef run():\n    from pkg.mid import x\n"
    )
    (package / "mid.py").write_text("from typing import TYPE_CHECKING\nfrom pkg.low import y\n")
    (package / "low.py").write_text("y = 1\n")

    assert find_cycle(import_graph(module_names(package, "pkg"))) == []


def test_the_notebook_imports_only_the_runtime_code_it_pickles() -> None:
    """``import cobalt`` loads the task and sublattice wrappers a dispatch pickles, and
    none of the replica's server, validation or batching (nor uvicorn or pydantic)."""
    code = (
        "import sys, cobalt\n"
        "print(sorted(m for m in sys.modules if m.startswith('cobalt._runtime')))\n"
        "print(sorted(m for m in ('uvicorn', 'pydantic', 'starlette') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    runtime, servers = out.stdout.splitlines()
    assert runtime == "['cobalt._runtime', 'cobalt._runtime.sublattice', 'cobalt._runtime.task']"
    assert servers == "[]"
