"""Executor descriptors are named after their options, the same way every time.

A script that writes ``ct.LocalExecutor(...)`` runs again and again; each run
must name the same executor, so that the controller reuses it instead of
registering another.
"""

from __future__ import annotations

import pytest

import cobalt as ct

pytestmark = pytest.mark.unit


def test_a_derived_name_is_the_same_in_every_process_and_release() -> None:
    # A fixed value: nothing per-process (hash seeds, dict order) goes into it, and
    # task and cost records keep the name, so a new derivation would split history.
    assert ct.LocalExecutor(emulate_gpus={"h100": 2}).name == "local-9d2fad6b"
    assert ct.LocalExecutor(memory="4GB", cpus=2, emulate_gpus={"a100": 1, "h100": 2}).name == (
        "local-e1832900"
    )
    assert ct.LocalExecutor().name == "local"


@pytest.mark.parametrize(
    ("first", "second"),
    [
        (
            {"emulate_gpus": {"h100": 2, "l4": 1}},
            {"emulate_gpus": {"l4": 1, "h100": 2}},
        ),
        ({"emulate_gpus": {"H100": 2}}, {"emulate_gpus": {"h100": 2}}),
        ({"memory": "8GB"}, {"memory": 8192}),
        ({"cpus": 2}, {"cpus": 2.0}),
        (
            {"prices": {"gpu_hour": {"H100": 2}, "base": "list"}},
            {"prices": {"base": "list", "gpu_hour": {"h100": 2.0}}},
        ),
        ({"workers": 2, "cpus": 4}, {"cpus": 4, "workers": 2}),
    ],
    ids=["dict-order", "gpu-spelling", "memory-units", "int-or-float", "prices", "keyword-order"],
)
def test_equal_options_written_differently_name_the_same_executor(
    first: dict[str, object], second: dict[str, object]
) -> None:
    a, b = ct.LocalExecutor(**first), ct.LocalExecutor(**second)  # type: ignore[arg-type]
    assert a.name == b.name
    assert a.options_json() == b.options_json()
    assert a == b and hash(a) == hash(b)


def test_different_options_name_different_executors() -> None:
    names = {
        ct.LocalExecutor(emulate_gpus={"h100": 1}).name,
        ct.LocalExecutor(emulate_gpus={"h100": 2}).name,
        ct.LocalExecutor(emulate_gpus={"h100": 2}, cpus=2).name,
        ct.LocalExecutor(emulate_gpus={"h100": 2}, prices="list").name,
    }
    assert len(names) == 4
    assert all(n.startswith("local-") and len(n) == len("local-") + 8 for n in names)


def test_an_explicit_name_is_kept_and_is_part_of_equality() -> None:
    named = ct.LocalExecutor(name="box", emulate_gpus={"h100": 2})
    assert named.name == "box"
    assert named.options == {"emulate_gpus": {"h100": 2}}
    assert named != ct.LocalExecutor(emulate_gpus={"h100": 2})
    assert named == ct.LocalExecutor("box", emulate_gpus={"h100": 2})
