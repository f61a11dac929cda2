from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from conftest import mypy_by_comment

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]

SNIPPET = textwrap.dedent(
    """
    from cobalt._electron import electron
    from cobalt._lattice import lattice


    @electron
    def bare(x: int, y: str = "a") -> str:
        return y * x


    @electron(gpu="h100", cpus=24, memory="48GB", time_limit="18h")
    def with_options(x: int) -> float:
        return float(x)


    @lattice
    def flow(n: int) -> list[str]:
        return [bare(n)]


    @lattice(gpu="l4", retries=1)
    def flow_with_options(n: int) -> float:
        return with_options(n)


    sub = electron(lattice(with_options))

    reveal_type(bare)  # bare
    reveal_type(bare(1))  # bare call
    reveal_type(with_options)  # with options
    reveal_type(with_options(2))  # with options call
    reveal_type(flow)  # lattice
    reveal_type(flow_with_options(3))  # lattice call
    reveal_type(flow.build_graph(3))  # build graph
    reveal_type(sub(1))  # sublattice call
    bare("x")  # wrong argument
    flow.build_graph("3")  # wrong lattice argument
    electron(gpux="h100")  # unknown option
    """
)


@pytest.fixture(scope="module")
def mypy_report(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Run mypy on the snippet once; map each line's trailing comment to mypy's message."""
    return mypy_by_comment(SNIPPET, tmp_path_factory.mktemp("typing"))


@pytest.mark.parametrize(
    ("line", "revealed"),
    [
        ("bare", "cobalt._electron.Electron[[x: int, y: str =], str]"),
        ("bare call", '"str"'),
        ("with options", "cobalt._electron.Electron[[x: int], float]"),
        ("with options call", '"float"'),
        ("lattice", "cobalt._lattice.Lattice[[n: int], list[str]]"),
        ("lattice call", '"float"'),
        ("build graph", '"cobalt._graph.Graph"'),
        ("sublattice call", '"float"'),
    ],
)
def test_decorators_keep_the_signature_and_return_type(
    mypy_report: dict[str, str], line: str, revealed: str
) -> None:
    assert revealed in mypy_report[line]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ("wrong argument", 'incompatible type "str"; expected "int"'),
        ("wrong lattice argument", 'incompatible type "str"; expected "int"'),
        ("unknown option", 'Unexpected keyword argument "gpux"'),
    ],
)
def test_type_checkers_catch_misuse(mypy_report: dict[str, str], line: str, error: str) -> None:
    assert error in mypy_report[line]
    assert "error:" in mypy_report[line]


def test_the_rest_of_the_snippet_type_checks_cleanly(mypy_report: dict[str, str]) -> None:
    expected = {
        "bare",
        "bare call",
        "with options",
        "with options call",
        "lattice",
        "lattice call",
        "build graph",
        "sublattice call",
        "wrong argument",
        "wrong lattice argument",
        "unknown option",
    }
    assert set(mypy_report) == expected
