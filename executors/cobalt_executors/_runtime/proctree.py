"""Finding and killing every process a worker started, however it detached.

A child that calls ``setsid`` leaves the worker's process group, and a
daemon (fork, new session, fork again, the middle one exits) is reparented
away from its parent, so neither dies with ``killpg``. The worker makes
itself a *child subreaper* (``prctl(PR_SET_CHILD_SUBREAPER)``): an orphan
among its descendants is reparented to the worker instead of init, so while
the worker lives every process it started, directly or not, is found by
walking ``/proc`` down from it.

Killing a tree that may still be forking: each round stops (``SIGSTOP``)
every descendant not stopped yet, until a walk finds all of them stopped; a
stopped process cannot fork, so the set is then complete and all of it is
killed.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
from pathlib import Path

_PR_SET_CHILD_SUBREAPER = 36
_ROUNDS = 50
"""Walks of /proc before giving up on catching a tree that keeps forking."""


def become_subreaper() -> bool:
    """Make orphaned descendants of this process its children; False where unsupported."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def _stat(pid: str) -> tuple[int, str] | None:
    """The parent pid and state letter of a process, or None once it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return int(fields[1]), fields[0].decode()


def descendants(root: int) -> dict[int, str]:
    """Every live descendant of ``root``, mapped to its state letter
    (``T`` stopped); zombies, which have already exited, are left out."""
    children: dict[int, list[tuple[int, str]]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit() and (stat := _stat(entry)) is not None:
            children.setdefault(stat[0], []).append((int(entry), stat[1]))
    found: dict[int, str] = {}
    todo = [root]
    while todo:
        for pid, state in children.get(todo.pop(), ()):
            if pid not in found:
                found[pid] = state
                todo.append(pid)
    return {pid: state for pid, state in found.items() if state not in ("Z", "X")}


def _signal(pid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signum)


def kill_descendants(root: int) -> int:
    """Stop, then kill, every descendant of ``root`` (not ``root`` itself).

    Returns:
        How many processes were killed.
    """
    stopped: set[int] = set()
    for _ in range(_ROUNDS):
        found = descendants(root)
        if all(state in ("T", "t") for state in found.values()):
            break
        for pid in found.keys() - stopped:
            _signal(pid, signal.SIGSTOP)
            stopped.add(pid)
    # Killed processes' children are reparented to root (a subreaper), so one
    # more walk finds any that a round missed.
    for pid in stopped | set(descendants(root)):
        _signal(pid, signal.SIGKILL)
    return len(stopped)


def kill_tree(root: int) -> None:
    """Kill ``root``, its process group and every descendant.

    ``root`` is stopped first, so that it starts nothing while its
    descendants are collected; they are killed before it, while it still
    holds its orphans.
    """
    _signal(root, signal.SIGSTOP)
    kill_descendants(root)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(root, signal.SIGKILL)
    _signal(root, signal.SIGKILL)


def reap_children() -> None:
    """Collect the exit status of every child that has exited (orphans of a
    subreaper become its zombies otherwise)."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
