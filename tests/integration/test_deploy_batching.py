"""Dynamic batching on the real stack: a controller, its gateway and a real replica.

The batching logic is unit-tested in-process (tests/unit/test_batching.py);
these tests check that concurrent callers going through the gateway are
really coalesced in a replica, and that each still gets exactly its own
answer, including when some inputs of a batch are invalid.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from conftest import DEPLOY_CONFIG_TOML

import cobalt as ct

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

CALLERS = 32


@ct.service(
    name="batched",
    cpus=0.25,
    # one replica, given every caller at once, so that batches can fill
    autoscaling=ct.Autoscaling(min_replicas=1, max_replicas=1, max_concurrency=64),
)
def batched(suffix: str) -> dict[str, Any]:
    return {"suffix": suffix}


@batched.endpoint("/shout", batch=ct.Batch(max_size=CALLERS, max_wait_ms=50))
def shout(suffix: str, text: list[str], times: list[int]) -> list[dict[str, Any] | Exception]:
    """Each text upper-cased ``times`` times, with the size of the batch it came in."""
    time.sleep(0.02)  # a model call: later callers pile up for the next batch
    size = len(text)
    return [
        ValueError(f"times={n} is negative")
        if n < 0
        else {"out": t.upper() * n + suffix, "batch": size}
        for t, n in zip(text, times, strict=True)
    ]


@pytest.fixture(scope="module")
def dep(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ct.Deployment]:
    from conftest import ControllerHome

    home: ControllerHome = ControllerHome(tmp_path_factory.mktemp("batching"), DEPLOY_CONFIG_TOML)
    with home.serving(), ct.deploy(batched)("!") as d:
        yield d


def all_at_once(dep: ct.Deployment, bodies: list[bytes]) -> list[httpx.Response]:
    """POST each body from its own thread, all released together."""
    start = threading.Barrier(len(bodies))
    answers: list[httpx.Response | None] = [None] * len(bodies)
    headers = {"Authorization": f"Bearer {dep.token}", "content-type": "application/json"}

    def call(i: int) -> None:
        with httpx.Client(timeout=30, trust_env=False) as client:
            start.wait()
            answers[i] = client.post(f"{dep.url}/shout", content=bodies[i], headers=headers)

    threads = [threading.Thread(target=call, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(a is not None for a in answers), "every caller got an answer"
    return [a for a in answers if a is not None]


def body(text: str, times: int | str) -> bytes:
    return json.dumps({"text": text, "times": times}).encode()


def test_concurrent_callers_each_get_their_own_result_from_shared_batches(
    dep: ct.Deployment,
) -> None:
    bodies = [body(f"caller{i}-", 1 + i % 3) for i in range(CALLERS)]
    answers = all_at_once(dep, bodies)
    assert [r.status_code for r in answers] == [200] * CALLERS, [r.text for r in answers]
    for i, r in enumerate(answers):
        assert r.json()["out"] == f"CALLER{i}-" * (1 + i % 3) + "!"
    sizes = [r.json()["batch"] for r in answers]
    assert max(sizes) > 1, f"no batching happened: {sizes}"
    assert dep.shout(text="one", times=1)["out"] == "ONE!", "the handle calls it like any route"


def test_invalid_inputs_in_a_batch_fail_only_their_own_callers(dep: ct.Deployment) -> None:
    def kind(i: int) -> str:
        return ("rejected", "mistyped", "ok", "ok")[i % 4]

    bodies = []
    for i in range(CALLERS):
        if kind(i) == "rejected":
            bodies.append(body(f"r{i}", -1 - i))  # the function returns a ValueError for it
        elif kind(i) == "mistyped":
            bodies.append(body(f"m{i}", "twice"))  # 422 before any batch
        else:
            bodies.append(body(f"k{i}", 2))
    answers = all_at_once(dep, bodies)
    ok_sizes = []
    for i, r in enumerate(answers):
        if kind(i) == "rejected":
            assert r.status_code == 500, r.text
            error = r.json()
            expected = f"the endpoint shout returned ValueError: times={-1 - i} is negative"
            assert error["error"] == expected
            assert error["error_id"]
        elif kind(i) == "mistyped":
            assert r.status_code == 422, r.text
            assert r.json()["field"] == "times"
        else:
            assert r.status_code == 200, r.text
            assert r.json()["out"] == f"K{i}K{i}!"
            ok_sizes.append(r.json()["batch"])
    assert max(ok_sizes) > 1, f"the valid callers were not batched: {ok_sizes}"
    with pytest.raises(ct.EndpointError) as info:
        dep.shout(text="x", times=-1)
    assert info.value.status_code == 500
