"""One warm worker process and the thread that reads what it reports."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

from cobalt_common.v1 import worker_pb2
from cobalt_executors._runtime.framing import Readable, encode, read_message
from cobalt_executors._runtime.proctree import kill_tree
from cobalt_executors.local._cgroup import WorkerCgroup, worker_cgroup
from cobalt_executors.local._functions import KnownFunctions

_ids = itertools.count(1)


class WorkerProcess:
    """A worker started with a fixed ``CUDA_VISIBLE_DEVICES`` (its ``device_key``),
    with ``CUDA_DEVICE_ORDER=PCI_BUS_ID`` so CUDA numbers GPUs as nvidia-smi does.

    A process that has touched CUDA cannot change devices, so a worker only
    ever runs tasks given the same GPUs.

    With ``cgroups``, the worker is moved into a cgroup of its own before it
    is sent a task, where this machine allows it (see ``_cgroup``); either
    way it is a child subreaper, so its process tree holds all it started.
    """

    def __init__(
        self,
        device_key: str,
        log_dir: Path,
        env: dict[str, str],
        on_result: Callable[[WorkerProcess, worker_pb2.WorkerResult], None],
        on_exit: Callable[[WorkerProcess, int | None], None],
        cgroups: bool = True,
    ) -> None:
        self.id = next(_ids)
        self.device_key = device_key
        self.known_functions = KnownFunctions()
        self.task_key: str | None = None
        self.out_path = log_dir / f"worker-{os.getpid()}-{self.id}.out"
        self.err_path = log_dir / f"worker-{os.getpid()}-{self.id}.err"
        self._on_result = on_result
        self._on_exit = on_exit
        parent, child = socket.socketpair()
        # device_key holds nvidia-smi's indices, which follow PCI bus order. CUDA
        # numbers devices fastest first unless told otherwise, so on a machine with
        # mixed GPUs CUDA_VISIBLE_DEVICES=1 could name another GPU than index 1.
        proc_env = {
            **os.environ,
            **env,
            "CUDA_VISIBLE_DEVICES": device_key,
            "CUDA_DEVICE_ORDER": "PCI_BUS_ID",
        }
        # -P: the worker's directory is wherever the controller was started, and a
        # folder there named like a package (a checkout of ``cobalt`` beside a
        # notebook) must not shadow the installed one. Tasks still start in the
        # directory they were dispatched from (see the worker runtime).
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-P",
                "-m",
                "cobalt_executors._runtime.worker",
                str(child.fileno()),
                str(self.out_path),
                str(self.err_path),
            ],
            pass_fds=[child.fileno()],
            stdin=subprocess.DEVNULL,
            env=proc_env,
            start_new_session=True,
        )
        child.close()
        # Python's start-up forks nothing, and no task is sent before this returns.
        self.cgroup: WorkerCgroup | None = (
            worker_cgroup(f"worker-{self.id}", self.proc.pid) if cgroups else None
        )
        self._sock = parent
        self._send_lock = threading.Lock()
        self._reader = threading.Thread(
            target=self._read, name=f"cobalt-worker-{self.id}", daemon=True
        )
        self._reader.start()

    def send(self, command: worker_pb2.WorkerCommand) -> None:
        data = encode(command)
        with self._send_lock:
            self._sock.sendall(data)

    def _read(self) -> None:
        stream: Readable = self._sock.makefile("rb", buffering=1 << 16)
        message = worker_pb2.WorkerMessage()
        try:
            while read_message(stream, message) is not None:
                if message.WhichOneof("message") == "result":
                    result = worker_pb2.WorkerResult()
                    result.CopyFrom(message.result)
                    self._on_result(self, result)
                message.Clear()
        except (OSError, EOFError, ValueError):
            pass
        self._on_exit(self, self.proc.wait())

    def read_logs(self, limit: int = 1 << 20) -> tuple[str, str]:
        """The captured output so far (used when the worker was killed)."""
        texts = []
        for path in (self.out_path, self.err_path):
            try:
                data = path.read_bytes()[-limit:]
            except OSError:
                data = b""
            texts.append(data.decode("utf-8", errors="replace"))
        return texts[0], texts[1]

    def kill(self) -> None:
        """Kills the worker and everything it started: its process group, its
        descendants (found while it is stopped and still holds its orphans),
        and all of its cgroup."""
        if self.proc.poll() is None:  # once reaped, the pid may be another process's
            kill_tree(self.proc.pid)
        if self.cgroup is not None:
            self.cgroup.kill()

    def shutdown(self) -> None:
        try:
            self.send(worker_pb2.WorkerCommand(shutdown=True))
            self._sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def cleanup(self) -> None:
        """After the worker exited: kills what its cgroup still holds (orphans
        of a worker that died by itself) and removes its files."""
        if self.cgroup is not None:
            self.cgroup.remove()
        self._sock.close()
        for path in (self.out_path, self.err_path):
            path.unlink(missing_ok=True)
