"""Starts a controller in the background, so a notebook needs no setup."""

from __future__ import annotations

import fcntl
import subprocess
import sys
import threading
import time
from pathlib import Path

from cobalt._client import ControllerInfo, pid_running, read_controller_info
from cobalt_common.errors import ControllerUnavailableError

START_TIMEOUT_S = 30.0


def start_controller(home: Path, *, timeout: float = START_TIMEOUT_S) -> ControllerInfo:
    """Starts ``python -m cobalt_controller serve`` detached, unless one is running.

    The controller outlives the notebook; ``cobalt controller stop`` stops it.
    Its log is ``$COBALT_HOME/controller.log``.
    """
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "controller.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = read_controller_info(home)
        if info is not None and pid_running(info.pid):
            return info
        log_path = home / "controller.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-P", "-m", "cobalt_controller", "serve", "--home", str(home)],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                close_fds=True,
            )
        # Reap the controller when it exits, so that it does not linger as a zombie
        # that `cobalt controller stop` (which waits for the pid to go) mistakes for alive.
        threading.Thread(target=proc.wait, name="cobalt-controller-reaper", daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = read_controller_info(home)
            if info is not None and info.pid == proc.pid:
                return info
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        tail = _tail(log_path)
        if proc.poll() is None:
            proc.kill()
        raise ControllerUnavailableError(
            f"the controller did not start within {timeout:g}s. Its log ({log_path}) ends with:\n"
            f"{tail}"
        )


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
