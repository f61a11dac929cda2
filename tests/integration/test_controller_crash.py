"""A controller killed with SIGKILL mid-dispatch loses no task: at-least-once, checked."""

from __future__ import annotations

import collections
import os
import random
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from support import wait_for

import cobalt as ct

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = pytest.mark.integration

FAN_OUT = 1000


@ct.electron
def square_and_log(x: int, log: str) -> int:
    """Appends ``x`` to ``log`` each time it runs: one write, atomic with O_APPEND."""
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, f"{x}\n".encode())
    finally:
        os.close(fd)
    return x * x


@ct.lattice
def fan_out(n: int, log: str) -> list[int]:
    return [square_and_log(x, log) for x in range(n)]


def _runs(log: Path) -> list[int]:
    try:
        text = log.read_text()
    except FileNotFoundError:
        return []
    # A line being written while the controller dies is complete or absent.
    return [int(line) for line in text.splitlines() if line]


def test_a_fan_out_completes_correctly_after_the_controller_is_killed_at_a_random_point(
    make_controller_home: Callable[..., ControllerHome], tmp_path: Path
) -> None:
    # CRASH_TEST_SEED=... replays a failure: the seed picks when the controller dies.
    seed = int(os.environ.get("CRASH_TEST_SEED") or random.randrange(1 << 32))
    # Task runs before the kill: 0 kills it before any task has run.
    kill_after = random.Random(seed).randrange(FAN_OUT * 9 // 10)
    home = make_controller_home()
    home.start()
    log = tmp_path / "runs"
    began = time.monotonic()
    dispatch_id = ct.dispatch(fan_out)(FAN_OUT, str(log))
    wait_for(
        lambda: len(_runs(log)) >= kill_after,
        timeout=30,
        what=f"{kill_after} tasks to run (seed {seed})",
        interval=0.005,
    )
    os.kill(home.pid, signal.SIGKILL)
    ran_before = len(_runs(log))
    home.start()
    result = ct.get_result(dispatch_id, wait=45)
    took = time.monotonic() - began

    assert result.status == ct.Status.COMPLETED, f"seed {seed}: {result.error}"
    assert result.result == [x * x for x in range(FAN_OUT)], f"seed {seed}"
    counts = collections.Counter(_runs(log))
    assert set(counts) == set(range(FAN_OUT)), f"seed {seed}: every task ran at least once"
    more_than_once = sum(1 for c in counts.values() if c > 1)
    print(
        f"\ncontroller killed after {ran_before} of {FAN_OUT} task runs (seed {seed}); "
        f"{more_than_once} tasks ran more than once, {sum(counts.values())} runs in all; "
        f"{took:.1f}s from dispatch to result"
    )
    assert took < 60, f"seed {seed}: the fan-out took {took:.0f}s"
