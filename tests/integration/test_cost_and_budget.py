"""Cost per task, cost-aware placement, budgets and estimates, on a real controller."""

from __future__ import annotations

import itertools
import math
import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ControllerHome
from support import wait_for

import cobalt as ct
from cobalt import _client
from cobalt_common.pricing import LIST_PRICES, format_usd
from cobalt_common.v1 import controller_pb2 as pb

pytestmark = pytest.mark.integration

COST_TOML = """\
[controller]
retry_backoff_s = 0.05
dashboard_address = ""

[executors.cheap]
type = "local"
cpus = 1
workers = 1

[executors.pricey]
type = "local"
cpus = 2
prices = { cpu_core_hour = 36.0 }

[executors.gpu]
type = "local"
emulate_gpus = { h100 = 2 }
memory = "256GB"
prices = "list"
"""
"""``cheap`` is free with one CPU, ``gpu`` bills list prices, ``pricey`` bills
a cent per core-second: a CPU task prefers them in that order."""

H100_RATE = LIST_PRICES.gpu_hour["h100"] + LIST_PRICES.cpu_core_hour


@pytest.fixture(scope="module", autouse=True)
def cost_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerHome]:
    with ControllerHome(tmp_path_factory.mktemp("cobalt-cost-home"), COST_TOML).serving() as home:
        yield home


@ct.electron(gpu="h100", time_limit="10s", executor="gpu")
def train(i: int) -> int:
    time.sleep(0.2)
    return i * 2


@ct.electron(time_limit="1m", executor="gpu")
def total(xs: list[int]) -> int:
    return sum(xs)


@ct.lattice
def sweep(n: int) -> int:
    return total([train(i) for i in range(n)])


@ct.electron(time_limit="1m")
def nap(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


@ct.lattice
def two_naps(seconds: float) -> list[float]:
    return [nap(seconds), nap(seconds)]


@ct.lattice
def one_nap() -> float:
    return nap(0.0)


def _dispatch_count() -> int:
    client = _client.get_client()
    return len(client.call(client.stub.DispatchList, pb.DispatchListRequest(limit=1000)).dispatches)


def test_task_cost_is_billed_seconds_times_the_rate_of_the_hardware_given() -> None:
    result = ct.dispatch_sync(sweep)(3)
    assert result.status == ct.Status.COMPLETED, result.error
    trains = [t for t in result.tasks if t.name == "train"]
    assert len(trains) == 3
    for t in trains:
        assert t.executor == "gpu" and t.emulated
        assert t.rate_usd_per_hour == pytest.approx(H100_RATE)
        assert t.duration_s is not None
        assert t.billed_s == max(1, math.ceil(t.duration_s))
        assert t.cost_usd == pytest.approx(t.billed_s * H100_RATE / 3600)
    (summing,) = [t for t in result.tasks if t.name == "total"]
    assert not summing.emulated
    assert summing.rate_usd_per_hour == pytest.approx(LIST_PRICES.cpu_core_hour)
    assert result.cost_usd == pytest.approx(sum(t.cost_usd for t in result.tasks))
    assert result.cost_usd > 0 and result.cost_emulated
    # Stored, not only live: a later get_result reads the same figures.
    again = ct.get_result(result.dispatch_id)
    assert again.cost_usd == pytest.approx(result.cost_usd)
    assert [t.cost_usd for t in again.tasks] == [t.cost_usd for t in result.tasks]
    table = result.task_table()
    assert "(emulated)" in table and "total" in table
    assert "includes emulated GPUs" in str(result)


def test_placement_picks_the_cheapest_free_executor_and_says_why() -> None:
    result = ct.dispatch_sync(one_nap)()
    (task,) = result.tasks
    assert task.executor == "cheap"
    assert task.placement.startswith("cheap at $0.00/h: the cheapest of 3")
    assert task.cost_usd == 0.0 and task.billed_s == 1.0

    result = ct.dispatch_sync(two_naps)(1.0)
    assert result.status == ct.Status.COMPLETED, result.error
    placed = sorted((t.executor, t.placement) for t in result.tasks)
    assert [executor for executor, _ in placed] == ["cheap", "gpu"]
    assert "cheaper but busy: cheap $0.00/h" in placed[1][1]
    gpu_task = next(t for t in result.tasks if t.executor == "gpu")
    assert gpu_task.cost_usd == pytest.approx(gpu_task.billed_s * LIST_PRICES.cpu_core_hour / 3600)


def test_a_budget_holds_each_running_task_s_worst_case() -> None:
    # One train's worst case is $0.0111 (10 s of an H100): a $0.015 budget lets
    # only one run at a time, though two emulated H100s are free.
    result = ct.dispatch_sync(sweep, budget_usd=0.015)(4)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.budget_usd == 0.015
    assert result.cost_usd <= 0.015
    spans = sorted(
        (t.start_time, t.end_time) for t in result.tasks if t.name == "train" and t.start_time
    )
    assert len(spans) == 4
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert end is not None and start is not None and start >= end, "ran one at a time"


def test_a_spent_budget_ends_the_dispatch_and_keeps_completed_results() -> None:
    result = ct.dispatch_sync(sweep, budget_usd=0.012)(4)
    assert result.status == ct.Status.BUDGET_EXCEEDED
    assert result.result is None
    assert result.cost_usd <= 0.012
    ran = [t for t in result.tasks if t.status == ct.Status.COMPLETED]
    not_run = [t for t in result.tasks if t.status == ct.Status.SKIPPED]
    assert [t.name for t in ran] == ["train"]
    assert len(not_run) == 4 and all(t.reason == "budget" for t in not_run)
    assert all(t.cost_usd == 0 and t.attempts == 0 for t in not_run)
    assert "Budget exceeded: $0.0120 budget" in result.error
    assert (
        "Ran 1 task(s)" in result.error and "Did not run 4 task(s): train x3, total" in result.error
    )
    assert re.search(r"task 'train' \(node \d+\) could cost up to \$0\.0111", result.error)
    kept = result.get_node_result(ran[0].node_id)
    assert kept["status"] == ct.Status.COMPLETED and kept["output"] in (0, 2, 4, 6)


@pytest.mark.parametrize("bad", [-1, 0, "5", float("nan"), float("inf"), True])
def test_a_budget_that_is_not_a_positive_number_is_refused_at_dispatch(bad: object) -> None:
    with pytest.raises(ct.SpecError, match="budget_usd must be a positive number"):
        ct.dispatch(sweep, budget_usd=bad)  # type: ignore[arg-type]
    with pytest.raises(ct.SpecError, match="budget_usd must be a positive number"):
        ct.dispatch_sync(sweep, budget_usd=bad)  # type: ignore[arg-type]


def test_budgets_that_could_never_be_kept_are_refused_before_anything_runs() -> None:
    @ct.electron(gpu="h100", executor="gpu")
    def unbounded() -> int:
        return 1

    @ct.lattice
    def no_limit() -> int:
        return unbounded()

    before = _dispatch_count()
    with pytest.raises(ct.SpecError, match=r"'unbounded' \(\$4.00/h on gpu\) has no time_limit"):
        ct.dispatch_sync(no_limit, budget_usd=100)()
    with pytest.raises(ct.SpecError, match=r"task 'train' alone could cost up to \$0.0111"):
        ct.dispatch_sync(sweep, budget_usd=0.005)(2)
    assert _dispatch_count() == before, "a refused dispatch leaves nothing behind"


def test_estimate_gives_worst_case_from_limits_and_expected_cost_from_history() -> None:
    @ct.electron(gpu="h100", time_limit="30s", executor="gpu")
    def fresh_electron(i: int) -> int:
        return i

    @ct.lattice
    def fresh(n: int) -> list[int]:
        return [fresh_electron(i) for i in range(n)]

    est = ct.estimate(fresh)(3)
    assert len(est.tasks) == 3
    worst_one = H100_RATE * 30 / 3600
    assert all(t.worst_usd == pytest.approx(worst_one) for t in est.tasks)
    assert est.worst_usd == pytest.approx(3 * worst_one)
    assert all(t.executor == "gpu" and t.emulated for t in est.tasks)
    assert est.expected_usd == 0 and len(est.without_history) == 3
    assert "no expected cost yet" in est.summary()

    assert ct.dispatch_sync(fresh)(2).status == ct.Status.COMPLETED
    est = ct.estimate(fresh)(3)
    assert est.without_history == []
    assert all(t.runs >= 2 and t.expected_s is not None for t in est.tasks)
    assert est.expected_usd == pytest.approx(3 * H100_RATE / 3600)  # 1 s billed each
    text = str(est)
    assert "worst" in text and "expected" in text and "(emulated)" in text


def test_estimate_flags_unbounded_tasks_and_runs_nothing() -> None:
    @ct.electron(gpu="h100", executor="gpu")
    def no_limit_electron() -> int:
        return 1

    @ct.lattice
    def no_limit() -> int:
        return no_limit_electron()

    before = _dispatch_count()
    est = ct.estimate(no_limit)()
    assert math.isinf(est.worst_usd)
    assert "unbounded" in str(est)
    assert _dispatch_count() == before


@ct.lattice
def inner(n: int) -> int:
    return total([train(i) for i in range(n)])


inner_task = ct.electron(inner)


@ct.lattice
def outer(n: int) -> list[int]:
    return [inner_task(n), train(10)]


def test_a_sublattice_costs_what_its_child_dispatch_cost() -> None:
    result = ct.dispatch_sync(outer)(2)
    assert result.status == ct.Status.COMPLETED, result.error
    (sub,) = [t for t in result.tasks if t.kind == "sublattice"]
    child = ct.get_result(sub.sublattice_dispatch_id)
    assert child.cost_usd > 0
    assert sub.cost_usd == pytest.approx(child.cost_usd)
    assert result.cost_usd == pytest.approx(sum(t.cost_usd for t in result.tasks))


def test_cli_lists_dispatch_costs_and_sums_spend(cost_home: ControllerHome) -> None:
    result = ct.dispatch_sync(sweep)(2)
    listing = cost_home.cli("dispatches", "--limit", "100").stdout
    line = next(x for x in listing.splitlines() if x.startswith(result.dispatch_id))
    assert "$" in line and "(emulated)" in line and "3 completed" in line

    spend = cost_home.cli("cost").stdout
    assert "day" in spend and "executor" in spend and "GPU type" in spend
    assert "H100 (emulated)" in spend
    totals = [
        float(m.group(1).replace(",", ""))
        for m in re.finditer(r"^total .*\$([0-9.,e-]+)$", spend, flags=re.M)
    ]
    assert len(totals) == 3 and len(set(totals)) == 1, spend


def test_cli_lists_a_sublattice_under_its_parent_and_says_its_cost_is_included_there(
    cost_home: ControllerHome,
) -> None:
    result = ct.dispatch_sync(outer)(2)
    assert result.status == ct.Status.COMPLETED, result.error
    (sub,) = [t for t in result.tasks if t.kind == "sublattice"]
    child = ct.get_result(sub.sublattice_dispatch_id)
    assert 0 < child.cost_usd < result.cost_usd

    listing = cost_home.cli("dispatches", "--limit", "100").stdout
    lines = listing.splitlines()
    at = next(i for i, line in enumerate(lines) if line.startswith(result.dispatch_id))
    parent_line, child_line = lines[at], lines[at + 1]
    assert child_line.startswith(f"└ {child.dispatch_id}  inner "), listing
    assert f"{format_usd(child.cost_usd)} (emulated) (in parent's)" in child_line
    assert f"{format_usd(result.cost_usd)} (emulated)" in parent_line
    assert "in parent" not in parent_line
    assert sum(child.dispatch_id in line for line in lines) == 1, "listed once, under its parent"
    assert "(in parent's) is already included in its parent's cost" in listing

    alone = cost_home.cli("dispatches", "--limit", "1").stdout
    assert f"inner (part of {result.dispatch_id})" in alone, "the parent is too old to list"
    assert "(in parent's)" in alone and "└" not in alone.split("\n\n")[0]


@ct.electron(gpu="h100", time_limit="10s", executor="gpu")
def slow_after(marker: str, x: int) -> int:
    Path(marker).touch()
    time.sleep(1.5)
    return x + 1


@ct.lattice
def spend_then_wait(marker: str) -> int:
    return slow_after(marker, train(1))


def test_a_resumed_dispatch_keeps_its_budget_and_what_it_spent(tmp_path: Path) -> None:
    home = ControllerHome(tmp_path / "home", COST_TOML)
    home.start()
    marker = tmp_path / "started"
    try:
        with home.active():
            dispatch_id = ct.dispatch(spend_then_wait, budget_usd=1.0)(str(marker))
            wait_for(marker.exists, timeout=30, what="the first task to start")
            before = ct.get_result(dispatch_id)
            assert before.cost_usd > 0, "the first task was billed before the restart"
            home.cli("controller", "stop")
            home.start()
            result = ct.get_result(dispatch_id, wait=60)
            assert result.status == ct.Status.COMPLETED, result.error
            assert result.result == 3
            assert result.budget_usd == 1.0
            assert result.cost_usd >= before.cost_usd
            assert result.cost_usd == pytest.approx(sum(t.cost_usd for t in result.tasks))
    finally:
        home.stop()
