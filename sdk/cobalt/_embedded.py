"""Starts a controller in the background, so a notebook needs no setup."""

from __future__ import annotations

import fcntl
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from cobalt._discovery import ControllerInfo, read_controller_info
from cobalt_common.errors import ConfigError, ControllerUnavailableError
from cobalt_common.paths import DEFAULT_HOME, config_file
from cobalt_common.processes import pid_running
from cobalt_common.startup import CONFIG_EXIT_CODE, find_config_error

START_TIMEOUT_S = 30.0


def start_controller(
    home: Path, *, timeout: float = START_TIMEOUT_S, announce: bool = False
) -> ControllerInfo:
    """Starts ``python -m cobalt_controller serve`` detached, unless one is running.

    The controller outlives the notebook; ``cobalt controller stop`` stops it.
    Its log is ``$COBALT_HOME/controller.log``.

    Args:
        home: the controller's ``COBALT_HOME``.
        timeout: how long it may take to be ready.
        announce: when this call starts one, say so on stderr (where, its log,
            how to stop it); nothing is said when one was already running.

    Raises:
        ConfigError: ``config.toml`` is invalid; the message names the file and key.
        ControllerUnavailableError: it exited early, or was not ready in ``timeout``.
    """
    home.mkdir(parents=True, exist_ok=True)
    with open(home / "controller.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        info = read_controller_info(home)
        if info is not None and pid_running(info.pid):
            return info
        info = _spawn(home, timeout)
    if announce:
        print(notice(info, home), file=sys.stderr, flush=True)
    return info


def notice(info: ControllerInfo, home: Path) -> str:
    """What a process that started a controller in the background tells its user."""
    stop = "cobalt controller stop"
    if home.expanduser().resolve() != DEFAULT_HOME.resolve():
        stop = f"COBALT_HOME={shlex.quote(str(home))} {stop}"
    return (
        f"cobalt: started a controller in the background at {info.address} (pid {info.pid}); "
        "it keeps running after this process ends.\n"
        f"  log:  {home / 'controller.log'}\n"
        f"  stop: {stop}"
    )


def _spawn(home: Path, timeout: float) -> ControllerInfo:
    log_path = home / "controller.log"
    offset = log_path.stat().st_size if log_path.exists() else 0
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
    code = proc.poll()
    if code is None:
        proc.kill()
        raise ControllerUnavailableError(
            f"the controller did not start within {timeout:g}s and was stopped. "
            f"Its log ({log_path}) ends with:\n{_tail(log_path, offset)}"
        )
    if code == CONFIG_EXIT_CODE:
        message = find_config_error(_read(log_path, offset))
        if message is not None:
            raise ConfigError(
                f"the controller cannot start: {message}\n"
                f"Correct {config_file(home)} and try again (its log: {log_path})."
            )
    how = f"was stopped by signal {-code}" if code < 0 else f"exited with code {code}"
    raise ControllerUnavailableError(
        f"the controller {how} before it was ready. Its log ({log_path}) ends with:\n"
        f"{_tail(log_path, offset)}"
    )


def _read(path: Path, offset: int) -> str:
    """What the log holds from ``offset`` on: this start's output only."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def _tail(path: Path, offset: int, lines: int = 20) -> str:
    text = _read(path, offset)
    return "\n".join(text.splitlines()[-lines:]) if text.strip() else "(nothing)"
