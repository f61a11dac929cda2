"""Time limits and cancellation stop real worker processes, quickly, and nothing else."""

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

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


def _process_gone(pid: int) -> bool:
    """Whether ``pid`` has exited (a zombie waiting for its parent counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return True
    return state in ("Z", "X")


@ct.electron(time_limit=1)
def sleeps_too_long() -> str:
    time.sleep(30)
    return "never"


@ct.lattice
def over_time() -> str:
    return sleeps_too_long()


@ct.electron
def quick(x: int) -> int:
    return x + 1


@ct.lattice
def quick_flow(x: int) -> int:
    return quick(x)


def test_a_task_past_its_time_limit_is_killed_and_the_dispatch_times_out() -> None:
    started = time.monotonic()
    result = ct.dispatch_sync(over_time, raise_on_failure=False)()
    assert time.monotonic() - started < 10
    assert result.status == ct.Status.TIMED_OUT
    (task,) = result.tasks
    assert task.status == ct.Status.TIMED_OUT
    assert task.hardware_requested.time_limit_s == 1.0
    assert task.start_time is not None and task.end_time is not None
    ran = (task.end_time - task.start_time).total_seconds()
    assert 1.0 <= ran < 1.0 + 1.5, f"killed {ran:.2f}s after it started"
    assert "time limit of 1s" in task.error
    assert "sleeps_too_long" in result.error


def test_the_executor_still_runs_tasks_after_a_time_limit_kill() -> None:
    assert ct.dispatch_sync(over_time, raise_on_failure=False)().status == ct.Status.TIMED_OUT
    results = [ct.dispatch_sync(quick_flow)(i) for i in range(4)]
    assert [r.result for r in results] == [1, 2, 3, 4]


@ct.electron
def long_running(pid_file: str, child_pid_file: str) -> str:
    child = subprocess.Popen(["sleep", "60"])
    Path(child_pid_file).write_text(str(child.pid))
    Path(pid_file).write_text(str(os.getpid()))
    time.sleep(60)
    return "never"


@ct.electron
def after_long(x: str, started_file: str) -> str:
    Path(started_file).write_text("started")
    return x


@ct.lattice
def cancellable(pid_file: str, child_pid_file: str, started_file: str) -> str:
    return after_long(long_running(pid_file, child_pid_file), started_file)


def test_cancel_kills_the_running_task_and_pending_tasks_never_start(tmp_path: Path) -> None:
    pid_file, child_file, started = (tmp_path / n for n in ("pid", "child", "started"))
    dispatch_id = ct.dispatch(cancellable)(str(pid_file), str(child_file), str(started))
    wait_for(pid_file.exists, timeout=10, what="the long task to start")
    pid, child_pid = int(pid_file.read_text()), int(child_file.read_text())
    assert not _process_gone(pid)

    began = time.monotonic()
    cancelled = ct.cancel(dispatch_id)
    result = ct.get_result(dispatch_id, wait=10)
    assert time.monotonic() - began < 3
    assert cancelled.status == ct.Status.CANCELLED
    assert result.status == ct.Status.CANCELLED
    assert "cancelled" in result.error
    by_name = {t.name: t for t in result.tasks}
    assert by_name["long_running"].status == ct.Status.CANCELLED
    assert by_name["after_long"].status == ct.Status.CANCELLED
    assert by_name["after_long"].start_time is None
    wait_for(lambda: _process_gone(pid), timeout=3, what="the worker process to be killed")
    wait_for(lambda: _process_gone(child_pid), timeout=3, what="what it started to be killed")
    time.sleep(0.3)
    assert not started.exists(), "the pending task never started"


def test_cancelling_a_finished_dispatch_leaves_it_as_it_ended() -> None:
    result = ct.dispatch_sync(quick_flow)(1)
    assert ct.cancel(result.dispatch_id).status == ct.Status.COMPLETED
    assert ct.get_result(result.dispatch_id).result == 2


def test_the_executor_still_runs_tasks_after_a_cancel(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    dispatch_id = ct.dispatch(cancellable)(str(pid_file), str(tmp_path / "c"), str(tmp_path / "s"))
    wait_for(pid_file.exists, timeout=10)
    ct.cancel(dispatch_id)
    results = [ct.dispatch_sync(quick_flow)(i) for i in range(4)]
    assert [r.result for r in results] == [1, 2, 3, 4]


def test_waiting_for_a_result_gives_up_after_the_given_seconds(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    dispatch_id = ct.dispatch(cancellable)(str(pid_file), str(tmp_path / "c"), str(tmp_path / "s"))
    try:
        began = time.monotonic()
        with pytest.raises(ct.WaitTimeoutError, match="still"):
            ct.get_result(dispatch_id, wait=0.5)
        assert 0.4 < time.monotonic() - began < 3
        assert ct.get_result(dispatch_id).status in (ct.Status.PENDING, ct.Status.RUNNING)
    finally:
        ct.cancel(dispatch_id)


def test_a_time_limit_raises_in_the_caller_with_its_reason() -> None:
    with pytest.raises(ct.TaskFailedError, match="hit its time limit") as info:
        ct.dispatch_sync(over_time)()
    assert info.value.reason == "time_limit"
    assert info.value.result.status == ct.Status.TIMED_OUT


@ct.electron(memory="300MB", time_limit="1m")
def hog(megabytes: int) -> int:
    held = b"x" * (megabytes * 1024 * 1024)  # every page touched
    time.sleep(5 if megabytes > 300 else 0)
    return len(held)


@ct.lattice
def hog_flow(megabytes: int) -> int:
    return hog(megabytes)


def test_a_task_over_its_memory_is_stopped_and_says_so() -> None:
    started = time.monotonic()
    with pytest.raises(ct.TaskFailedError, match="ran out of memory") as info:
        ct.dispatch_sync(hog_flow)(600)
    assert time.monotonic() - started < 5, "stopped when it went over, not when it ended"
    exc = info.value
    assert exc.reason == "out_of_memory"
    assert "more than the 300 MB it asked for" in str(exc)
    assert "memory=" in str(exc)
    # The executor goes on running tasks within their memory.
    assert ct.dispatch_sync(hog_flow)(10).result == 10 * 1024 * 1024


_ESCAPE = """
import os, sys, time
from pathlib import Path
setsid_file, daemon_file = sys.argv[1], sys.argv[2]
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        Path(daemon_file).write_text(str(os.getpid()))
        time.sleep(60)
    os._exit(0)
os.setsid()
Path(setsid_file).write_text(str(os.getpid()))
time.sleep(60)
"""
"""Becomes a session leader of its own, after forking a daemon the usual way (a
fork, a new session, a second fork, and the middle process exits)."""


@ct.electron(time_limit=1.5)
def starts_escaping_children(setsid_file: str, daemon_file: str) -> str:
    subprocess.Popen([sys.executable, "-c", _ESCAPE, setsid_file, daemon_file])
    time.sleep(30)
    return "never"


@ct.electron
def leaves_escaping_children(setsid_file: str, daemon_file: str) -> str:
    subprocess.Popen([sys.executable, "-c", _ESCAPE, setsid_file, daemon_file])
    while not (Path(setsid_file).exists() and Path(daemon_file).exists()):
        time.sleep(0.02)
    return "done"


@ct.lattice
def escaping_flow(setsid_file: str, daemon_file: str) -> str:
    return starts_escaping_children(setsid_file, daemon_file)


@ct.lattice
def leaving_flow(setsid_file: str, daemon_file: str) -> str:
    return leaves_escaping_children(setsid_file, daemon_file)


def _escaped_pids(setsid_file: Path, daemon_file: Path) -> list[int]:
    wait_for(
        lambda: setsid_file.exists() and daemon_file.exists(),
        timeout=10,
        what="its children to start",
    )
    return [int(setsid_file.read_text()), int(daemon_file.read_text())]


def test_children_in_their_own_session_and_daemons_die_with_a_timed_out_task(
    tmp_path: Path,
) -> None:
    setsid_file, daemon_file = tmp_path / "setsid", tmp_path / "daemon"
    dispatch_id = ct.dispatch(escaping_flow)(str(setsid_file), str(daemon_file))
    pids = _escaped_pids(setsid_file, daemon_file)
    assert not any(_process_gone(pid) for pid in pids)
    assert ct.get_result(dispatch_id, wait=10).status == ct.Status.TIMED_OUT
    for pid in pids:
        wait_for(lambda pid=pid: _process_gone(pid), timeout=3, what=f"process {pid} to end")


def test_children_in_their_own_session_and_daemons_die_with_a_cancelled_task(
    tmp_path: Path,
) -> None:
    setsid_file, daemon_file = tmp_path / "setsid", tmp_path / "daemon"
    dispatch_id = ct.dispatch(escaping_flow)(str(setsid_file), str(daemon_file))
    pids = _escaped_pids(setsid_file, daemon_file)
    ct.cancel(dispatch_id)
    assert ct.get_result(dispatch_id, wait=10).status == ct.Status.CANCELLED
    for pid in pids:
        wait_for(lambda pid=pid: _process_gone(pid), timeout=3, what=f"process {pid} to end")


def test_what_a_task_leaves_running_when_it_returns_is_killed(tmp_path: Path) -> None:
    setsid_file, daemon_file = tmp_path / "setsid", tmp_path / "daemon"
    result = ct.dispatch_sync(leaving_flow)(str(setsid_file), str(daemon_file))
    assert result.result == "done"
    for pid in _escaped_pids(setsid_file, daemon_file):
        wait_for(lambda pid=pid: _process_gone(pid), timeout=3, what=f"process {pid} to end")


_TREE_ONLY_CONFIG = """\
[executors.local]
type = "local"
workers = 1
cgroups = false
"""


def test_without_cgroups_the_process_tree_alone_contains_a_timed_out_task(
    make_controller_home: Callable[..., ControllerHome], tmp_path: Path
) -> None:
    make_controller_home(_TREE_ONLY_CONFIG).start()
    setsid_file, daemon_file = tmp_path / "setsid", tmp_path / "daemon"
    dispatch_id = ct.dispatch(escaping_flow)(str(setsid_file), str(daemon_file))
    pids = _escaped_pids(setsid_file, daemon_file)
    assert ct.get_result(dispatch_id, wait=10).status == ct.Status.TIMED_OUT
    for pid in pids:
        wait_for(lambda pid=pid: _process_gone(pid), timeout=3, what=f"process {pid} to end")
    assert ct.dispatch_sync(leaving_flow)(str(tmp_path / "s2"), str(tmp_path / "d2")).result
    for pid in _escaped_pids(tmp_path / "s2", tmp_path / "d2"):
        wait_for(lambda pid=pid: _process_gone(pid), timeout=3, what=f"process {pid} to end")
