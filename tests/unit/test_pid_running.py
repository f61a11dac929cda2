"""``pid_running``: whether a controller's recorded pid is a live process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import wait_for

from cobalt_common.processes import pid_running

pytestmark = pytest.mark.unit


def _state(pid: int) -> bytes:
    stat = Path(f"/proc/{pid}/stat").read_bytes()
    return stat[stat.rfind(b")") + 1 :].split()[0]


def test_a_live_process_is_running() -> None:
    assert pid_running(os.getpid())
    with subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"]) as child:
        try:
            assert pid_running(child.pid)
        finally:
            child.kill()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs /proc")
def test_a_zombie_is_not_running() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    try:
        wait_for(lambda: _state(child.pid) == b"Z", timeout=30, what="the child to exit")
        os.kill(child.pid, 0)  # a zombie still answers signal 0
        assert not pid_running(child.pid)
    finally:
        child.wait()
    assert not pid_running(child.pid), "nor is a reaped process"


def test_no_pid_is_not_running() -> None:
    assert not pid_running(0)
    assert not pid_running(-1)


def test_the_examples_in_the_docstrings_hold() -> None:
    import doctest

    from cobalt_common import processes

    assert doctest.testmod(processes).failed == 0
