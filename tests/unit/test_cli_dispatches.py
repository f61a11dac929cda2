"""``cobalt dispatches``: sublattices under their parent, their cost marked as counted there."""

from __future__ import annotations

import pytest

from cobalt.cli.dispatches import format_dispatches, nest
from cobalt_common.v1 import controller_pb2 as pb

pytestmark = pytest.mark.unit


def _dispatch(dispatch_id: str, created_at: float, parent: str = "") -> pb.Dispatch:
    return pb.Dispatch(
        dispatch_id=dispatch_id,
        name=f"wf-{dispatch_id}",
        created_at=created_at,
        parent_dispatch_id=parent,
        cost_usd=0.5,
    )


NEWEST_FIRST = [
    _dispatch("c2", 5, parent="p"),
    _dispatch("g", 4, parent="c1"),
    _dispatch("c1", 3, parent="p"),
    _dispatch("p", 2),
    _dispatch("old", 1),
]


def test_sublattices_are_listed_under_their_parent_oldest_first_at_any_depth() -> None:
    order = [(depth, d.dispatch_id) for depth, d in nest(NEWEST_FIRST)]

    assert order == [(0, "p"), (1, "c1"), (2, "g"), (1, "c2"), (0, "old")]


def test_only_sublattice_rows_say_their_cost_is_in_their_parents() -> None:
    lines = format_dispatches(NEWEST_FIRST).splitlines()
    rows = lines[2:7]

    assert [row.split(" wf-")[0].strip() for row in rows] == ["p", "└ c1", "└ g", "└ c2", "old"]
    assert rows[2].startswith("  └ g"), "a sublattice's sublattice is indented once more"
    marked = ["(in parent's)" in row for row in rows]
    assert marked == [False, True, True, True, False]
    assert "is already included in its parent's cost" in lines[-1]


def test_a_sublattice_whose_parent_is_not_listed_names_it() -> None:
    text = format_dispatches([_dispatch("c", 2, parent="p-too-old")])

    assert "wf-c (part of p-too-old)" in text and "$0.500 (in parent's)" in text
    assert "marked 'part of' it" in text


def test_a_listing_without_sublattices_has_no_note() -> None:
    text = format_dispatches([_dispatch("p", 2), _dispatch("old", 1)])

    assert "in parent" not in text and "└" not in text
