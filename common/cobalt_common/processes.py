"""Whether a process is alive, as the controller, its executors and the SDK ask it."""

from __future__ import annotations

import os


def pid_running(pid: int) -> bool:
    """Whether a process with this pid is alive (it may belong to another user).

    A zombie (exited, not yet reaped by its parent) still answers signals but
    runs nothing, so it counts as not running.

    Example:
        >>> pid_running(os.getpid()), pid_running(0)
        (True, False)
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return not _exited(pid)


def _exited(pid: int) -> bool:
    """Whether ``/proc`` shows ``pid`` as exited (a zombie, or gone); False without ``/proc``."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            stat = file.read()
    except FileNotFoundError:
        # Either no /proc on this system, or the process has just been reaped.
        return not os.path.isdir("/proc/self")
    except OSError:
        return False
    # "pid (comm) state ...": comm may itself hold spaces and parentheses.
    fields = stat[stat.rfind(b")") + 1 :].split()
    return bool(fields) and fields[0] in (b"Z", b"X")


__all__ = ["pid_running"]
