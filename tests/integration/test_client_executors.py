"""Executors that scripts describe (``ct.LocalExecutor(...)``) on a real controller.

They do not pile up: the same description names one executor however often
scripts send it, all local executors share the machine's cores, and a
restarted controller brings back only the ones unfinished work still needs.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import wait_for

import cobalt as ct
from cobalt._client import get_client

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = pytest.mark.integration

TWO_CPU_TOML = """\
[controller]
retry_backoff_s = 0.05
dashboard_address = ""
gateway_address = ""

[executors.local]
type = "local"
cpus = 2
workers = 1
"""
"""A controller whose machine has 2 CPUs, whatever the host has."""

_SCRIPT = """\
import cobalt as ct

@ct.electron(executor=ct.LocalExecutor({options}))
def double(x):
    return 2 * x

@ct.lattice
def flow(x):
    return double(x)

print(ct.dispatch_sync(flow)(21).result)
"""


def _client_executors() -> dict[str, str]:
    """Name and capacity of each executor a client described, as status lists them."""
    status = get_client().status()
    return {e.name: e.capacity for e in status.executors if not e.configured}


def _run_script(home: ControllerHome, folder: Path, options: str) -> str:
    script = folder / "script.py"
    script.write_text(_SCRIPT.format(options=options))
    env = {**os.environ, "COBALT_HOME": str(home.path)}
    for key in ("COBALT_CONTROLLER_ADDRESS", "COBALT_CONTROLLER_TOKEN"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_running_a_script_again_reuses_its_executor(
    make_controller_home: Callable[..., ControllerHome], tmp_path: Path
) -> None:
    home = make_controller_home(TWO_CPU_TOML)
    home.start()
    first = 'emulate_gpus={"h100": 1, "l4": 1}, cpus=2, memory="4GB"'
    again = 'memory=4096, cpus=2.0, emulate_gpus={"L4": 1, "h100": 1}'
    for options in (first, again, first):
        assert _run_script(home, tmp_path, options) == "42"
    executors = _client_executors()
    assert len(executors) == 1, executors
    (name,) = executors
    assert name.startswith("local-")
    status = home.cli("controller", "status").stdout
    assert status.count("client") == 1, status
    assert status.count("machine:") == 1, status


@ct.electron(executor=ct.LocalExecutor(emulate_gpus={"h100": 1}))
def nap_on_h100(seconds: float) -> tuple[float, float]:
    began = time.time()
    time.sleep(seconds)
    return began, time.time()


@ct.electron(executor=ct.LocalExecutor(emulate_gpus={"l4": 1}))
def nap_on_l4(seconds: float) -> tuple[float, float]:
    began = time.time()
    time.sleep(seconds)
    return began, time.time()


@ct.lattice
def naps_on_two_executors(n: int, seconds: float) -> list[tuple[float, float]]:
    return [nap_on_h100(seconds) for _ in range(n)] + [nap_on_l4(seconds) for _ in range(n)]


def _most_at_once(spans: list[tuple[float, float]]) -> int:
    edges = sorted([(began, 1) for began, _ in spans] + [(ended, -1) for _, ended in spans])
    running = most = 0
    for _, step in edges:
        running += step
        most = max(most, running)
    return most


def test_two_client_executors_together_run_no_more_one_cpu_tasks_than_the_machine_has(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home(TWO_CPU_TOML)
    home.start()
    result = ct.dispatch_sync(naps_on_two_executors)(3, 0.6)
    assert result.status == ct.Status.COMPLETED, result.error
    assert {t.executor for t in result.tasks if t.name.startswith("nap")} == set(
        _client_executors()
    )
    assert len(_client_executors()) == 2
    assert _most_at_once(result.result) == 2, "two at once, on a 2-CPU machine"
    assert all(capacity.startswith("machine,") for capacity in _client_executors().values())


@ct.electron(executor=ct.LocalExecutor(emulate_gpus={"a100-80gb": 1}))
def done_at_once(x: int) -> int:
    return x


@ct.lattice
def finishes(x: int) -> int:
    return done_at_once(x)


@ct.electron(executor=ct.LocalExecutor(emulate_gpus={"l4": 2}))
def slow_start(marker: str) -> int:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(1.5)
    return 20


@ct.electron
def plus_one(x: int) -> int:
    return x + 1


@ct.lattice
def slow_then_fast(marker: str) -> int:
    return plus_one(slow_start(marker))


def test_a_restarted_controller_forgets_unused_client_executors_and_keeps_needed_ones(
    make_controller_home: Callable[..., ControllerHome], tmp_path: Path
) -> None:
    home = make_controller_home(TWO_CPU_TOML)
    home.start()
    assert ct.dispatch_sync(finishes)(7).result == 7
    marker = tmp_path / "started"
    dispatch_id = ct.dispatch(slow_then_fast)(str(marker))
    wait_for(marker.exists, timeout=30)
    unused = done_at_once.options.executor
    needed = slow_start.options.executor
    assert isinstance(unused, ct.LocalExecutor) and isinstance(needed, ct.LocalExecutor)
    assert set(_client_executors()) == {unused.name, needed.name}

    home.cli("controller", "stop")
    home.start()

    assert set(_client_executors()) == {needed.name}, "only what the unfinished dispatch needs"
    status = home.cli("controller", "status").stdout
    assert unused.name not in status and needed.name in status
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == 21
    slow = next(t for t in result.tasks if t.name == "slow_start")
    assert slow.executor == needed.name and slow.attempts >= 2
