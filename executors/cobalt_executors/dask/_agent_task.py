"""What runs on a Dask worker: one cobalt agent, as a subprocess.

The function runs as a long-running Dask task. It leaves the worker's thread
pool at once (``secede``), so that the agent does not take a thread from the
worker's own tasks, and starts the agent with its credential in the
environment, never on its command line. The agent is sent SIGTERM when the
worker process dies (``PR_SET_PDEATHSIG``): it then closes its stream, so that
the controller reports its tasks lost, and kills them. The controller stops
the agent by setting a Dask :class:`~distributed.Event`; a controller that is
gone without setting it (killed) leaves its Dask tasks released by the
scheduler, and each agent stops once its worker marks its task cancelled.

Only the standard library and ``distributed`` are imported here: this module
is loaded in the worker's interpreter.
"""

from __future__ import annotations

import contextlib
import ctypes
import importlib
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable
from typing import Any

TOKEN_VARIABLE = "COBALT_AGENT_TOKEN"
_PR_SET_PDEATHSIG = 1
POLL_S = 0.5
"""How often the stop event is read while the agent runs."""
STOP_GRACE_S = 10.0
"""How long the agent has to stop (and kill its tasks) after SIGTERM."""


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)


def _still_wanted(distributed: Any) -> Callable[[], bool]:
    """Whether the scheduler still wants this task: once the controller's client is
    gone (the controller stopped or was killed), the scheduler releases the task and
    the worker marks it cancelled, and the agent stops with it."""
    try:
        worker = distributed.get_worker()
        key = worker.get_current_task()
    except (ValueError, AttributeError):  # not inside a Dask task: a direct call
        return lambda: True

    def wanted() -> bool:
        task = worker.state.tasks.get(key)
        return task is not None and task.state not in ("cancelled", "released", "forgotten")

    return wanted


def run_agent(argv: list[str], token: str, stop_event: str) -> int:
    """Runs the agent ``argv`` until it ends or ``stop_event`` is set; its exit code.

    The agent's own folder is made here, in the worker machine's temporary folder.
    """
    distributed: Any = importlib.import_module("distributed")
    wanted = _still_wanted(distributed)
    with contextlib.suppress(ValueError, KeyError):  # not inside a Dask task: a direct call
        distributed.secede()
    allocation = argv[argv.index("--allocation") + 1] if "--allocation" in argv else "agent"
    work_dir = os.path.join(tempfile.gettempdir(), f"cobalt-agent-{allocation}")
    argv = [*argv, "--work-dir", work_dir]
    env = dict(os.environ)
    env[TOKEN_VARIABLE] = token
    process = subprocess.Popen(argv, env=env, stdin=subprocess.DEVNULL, preexec_fn=_die_with_parent)
    stop = distributed.Event(stop_event)
    try:
        while True:
            try:
                return process.wait(POLL_S)
            except subprocess.TimeoutExpired:
                pass
            try:
                stopping = stop.is_set()
            except Exception:  # the scheduler is unreachable: keep the agent for now
                stopping = False
            if stopping or not wanted():
                break
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return process.returncode
