"""A cgroup v2 per worker, where this machine lets the controller make one.

A process cannot leave its cgroup without write access to another one's
``cgroup.procs``, so everything a task starts (its own session, a daemon, a
process whose parent died) stays in its worker's cgroup, and writing ``1`` to
``cgroup.kill`` (Linux 5.14) kills all of it at once.

Layout: ``<this process's cgroup>/cobalt-<pid>/worker-<n>``, made on first use
and removed when the worker and the controller exit. Where cgroup v2 is not
mounted, or is read-only (most containers, a non-root user outside a
delegated subtree), :func:`controller_cgroup` returns None and workers are
contained by their process tree alone (see ``proctree``).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import signal
import threading
import time
from pathlib import Path

from cobalt_common.processes import pid_running

log = logging.getLogger(__name__)

_lock = threading.Lock()
_parent: Path | None = None
_probed = False


def _mount_point() -> Path | None:
    """Where the cgroup v2 hierarchy is mounted (``/sys/fs/cgroup``, or
    ``/sys/fs/cgroup/unified`` on hybrid systems)."""
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        before, _, after = line.partition(" - ")
        if after.split(" ", 1)[0] == "cgroup2":
            return Path(before.split()[4])
    return None


def _own_cgroup() -> Path | None:
    mount = _mount_point()
    if mount is None:
        return None
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        if line.startswith("0::"):
            path = mount / line[3:].lstrip("/")
            return path if path.is_dir() else None
    return None


def _remove_stale(base: Path) -> None:
    """Removes the empty cgroups of controllers that died without removing theirs.

    What still runs in one is left alone: a replica that outlived a crashed
    controller keeps serving, and the next controller adopts it; its cgroup goes
    at a later start, once it is empty.
    """
    for stale in base.glob("cobalt-*"):
        pid = stale.name.removeprefix("cobalt-")
        if not pid.isdigit() or pid_running(int(pid)):
            continue
        for child in stale.glob("worker-*"):
            with contextlib.suppress(OSError):
                child.rmdir()  # refused while a process is in it
        with contextlib.suppress(OSError):
            stale.rmdir()


def controller_cgroup() -> Path | None:
    """This process's cgroup for its workers, made on first call; None where
    cgroups cannot be made (checked once)."""
    global _parent, _probed
    with _lock:
        if _probed:
            return _parent
        _probed = True
        base = _own_cgroup()
        if base is None:
            return None
        _remove_stale(base)
        path = base / f"cobalt-{os.getpid()}"
        try:
            path.mkdir(exist_ok=True)
        except OSError as exc:
            log.info("workers are contained by process tree only: cannot make a cgroup: %s", exc)
            return None
        _parent = path
        atexit.register(_remove_parent, path)
        return path


def _remove_parent(path: Path) -> None:
    for child in path.glob("worker-*"):
        WorkerCgroup(child).remove(wait_s=0.5)
    with contextlib.suppress(OSError):
        path.rmdir()


def worker_cgroup(name: str, pid: int) -> WorkerCgroup | None:
    """Makes the cgroup ``name`` under :func:`controller_cgroup` and moves ``pid``
    into it; None (and no cgroup left behind) where either fails."""
    parent = controller_cgroup()
    if parent is None:
        return None
    group = WorkerCgroup(parent / name)
    try:
        group.path.mkdir()
        (group.path / "cgroup.procs").write_text(str(pid))
    except OSError as exc:
        log.info("worker %d is contained by process tree only: %s", pid, exc)
        with contextlib.suppress(OSError):
            group.path.rmdir()
        return None
    return group


class WorkerCgroup:
    """The cgroup of one worker and everything started under it."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def pids(self) -> list[int]:
        try:
            return [int(p) for p in (self.path / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            return []

    def kill(self) -> None:
        """Kills every process in the cgroup, the worker included."""
        try:
            (self.path / "cgroup.kill").write_text("1")
            return
        except OSError:
            pass
        # Before Linux 5.14: freeze (5.2) so that nothing forks, then kill by pid.
        with contextlib.suppress(OSError):
            (self.path / "cgroup.freeze").write_text("1")
        for _ in range(50):
            pids = self.pids()
            if not pids:
                break
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):
            (self.path / "cgroup.freeze").write_text("0")

    def remove(self, wait_s: float = 2.0) -> None:
        """Kills what is left and removes the cgroup (once it is empty)."""
        if not self.path.is_dir():
            return
        self.kill()
        deadline = time.monotonic() + wait_s
        while True:
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() > deadline:
                    return
                time.sleep(0.01)
