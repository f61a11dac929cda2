"""The Ray actor that holds one node's resources and runs a cobalt agent in them.

It runs inside a Ray worker process on the node it is pinned to; the driver
(:mod:`cobalt_executors.ray._driver`) creates it with the node's CPUs, memory
and GPUs as its resources. :meth:`AgentActor.run` starts the agent as a
subprocess leading its own process group and returns its exit status when it
ends; :meth:`AgentActor.stop` ends the group. The agent's credential arrives as
an argument and reaches the agent in its environment, never its command line.
If the actor's process dies (the node fails, Ray kills the actor), the agent is
killed with it (``PR_SET_PDEATHSIG``), so its stream to the controller closes
and its tasks are reported lost.

Nothing here imports ``ray``: the driver wraps the class with ``ray.remote``.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence

_PR_SET_PDEATHSIG = 1
_STOP_GRACE_S = 5.0


def _die_with_parent() -> None:  # pragma: no cover - runs in the child before exec
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


class AgentActor:
    """Runs one cobalt agent on this node for as long as the actor lives."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        self._stopped = threading.Event()

    def run(self, argv: Sequence[str], env: Mapping[str, str], python: str = "") -> int:
        """Runs the agent (``python -m cobalt_executors.agent`` plus ``argv``) until
        it ends; returns its exit status.

        Args:
            argv: the agent's options, without a credential.
            env: variables added to the agent's environment (its credential).
            python: the interpreter with cobalt on this node; "" for this one.
        """
        work_dir = tempfile.mkdtemp(prefix="cobalt-agent-")
        command = [python or sys.executable, "-m", "cobalt_executors.agent", *argv]
        command += ["--work-dir", work_dir]
        try:
            self._process = subprocess.Popen(
                command,
                env={**os.environ, **env},
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )
            if self._stopped.is_set():
                self.stop()
            return self._process.wait()
        finally:
            shutil.rmtree(work_dir, ignore_errors=True)

    def stop(self) -> None:
        """Ends the agent's process group: SIGTERM, then SIGKILL after a grace."""
        self._stopped.set()
        process = self._process
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + _STOP_GRACE_S
        while process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)

    def pid(self) -> int:
        """The agent's process id (0 before it starts); tests kill it by this."""
        return self._process.pid if self._process is not None else 0
