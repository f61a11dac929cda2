"""A worker's process tree and cgroup hold everything it started, and are killed whole."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from support import wait_for

from cobalt_executors._runtime.proctree import descendants, kill_descendants, kill_tree
from cobalt_executors.local._cgroup import worker_cgroup

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="Linux process control"),
]

_WORKER_LIKE = """
import os, subprocess, sys, time
from pathlib import Path
from cobalt_executors._runtime.proctree import become_subreaper
assert become_subreaper()
folder = Path(sys.argv[1])
subprocess.Popen(["sleep", "60"], start_new_session=True)
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        (folder / "daemon").write_text(str(os.getpid()))
        time.sleep(60)
    os._exit(0)
(folder / "ready").write_text(str(os.getpid()))
time.sleep(60)
"""
"""Stands in for a worker: a subreaper with a child in its own session and a daemon."""


def _gone(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return True
    return state in ("Z", "X")


@pytest.fixture
def worker_like(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], list[int]]]:
    proc = subprocess.Popen([sys.executable, "-c", _WORKER_LIKE, str(tmp_path)])
    try:
        wait_for(
            lambda: (tmp_path / "ready").exists() and (tmp_path / "daemon").exists(), timeout=5
        )
        # The middle process of the daemon exits: its child is reparented.
        wait_for(lambda: len(descendants(proc.pid)) == 2, timeout=5)
        yield proc, list(descendants(proc.pid))
    finally:
        kill_tree(proc.pid)
        proc.wait()


def test_a_subreapers_descendants_include_its_daemons_and_other_sessions(
    worker_like: tuple[subprocess.Popen[bytes], list[int]], tmp_path: Path
) -> None:
    _, pids = worker_like
    assert int((tmp_path / "daemon").read_text()) in pids
    assert all(not _gone(pid) for pid in pids)


def test_killing_the_descendants_leaves_the_root_running(
    worker_like: tuple[subprocess.Popen[bytes], list[int]],
) -> None:
    proc, pids = worker_like
    assert kill_descendants(proc.pid) == 2
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=5)
    assert proc.poll() is None


def test_killing_the_tree_kills_the_root_and_everything_it_started(
    worker_like: tuple[subprocess.Popen[bytes], list[int]],
) -> None:
    proc, pids = worker_like
    kill_tree(proc.pid)
    assert proc.wait(timeout=5) < 0
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=5)


def test_a_worker_cgroup_holds_what_its_process_starts_and_kills_it_all() -> None:
    proc = subprocess.Popen(["sleep", "60"])
    try:
        group = worker_cgroup("worker-unit-test", proc.pid)
        if group is None:
            pytest.skip("no writable cgroup v2 here: workers are contained by process tree")
        assert group.pids() == [proc.pid]
        group.kill()
        assert proc.wait(timeout=5) < 0
        group.remove()
        assert not group.path.exists()
    finally:
        proc.kill()
        proc.wait()
