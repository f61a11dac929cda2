"""A warm worker's functions, as its executor counts them, never include one it dropped."""

from __future__ import annotations

import doctest

import pytest

from cobalt_executors.local import _functions
from cobalt_executors.local._functions import KnownFunctions

pytestmark = pytest.mark.unit


def test_the_examples_in_the_docstrings_hold() -> None:
    assert doctest.testmod(_functions).failed == 0


def test_functions_beyond_the_limit_are_forgotten_least_recently_used_first() -> None:
    known = KnownFunctions(limit=3)
    for sha in "abc":
        known.add(sha)
    assert known.holds("a")
    known.add("d")
    known.add("e")
    assert known.take_forgotten() == ["b", "c"]
    assert known.take_forgotten() == []
    assert [sha for sha in "abcde" if known.holds(sha)] == ["a", "d", "e"]


def test_a_dropped_function_is_sent_again_and_the_worker_told_to_drop_its_copy() -> None:
    known = KnownFunctions()
    known.add("a")
    known.drop("a")
    known.drop("never sent")
    assert not known.holds("a")
    assert known.take_forgotten() == ["a"]
