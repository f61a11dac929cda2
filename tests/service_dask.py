"""A real Dask cluster on loopback, for tests of cobalt's Dask executor.

``dask scheduler`` and ``dask worker`` come from the test environment (the
``dask`` extra). The scheduler listens on a free port of 127.0.0.1 without a
dashboard; each worker runs under its nanny, which restarts it when it is
killed (under a new address). Everything is stopped by PID at the end of the
session.

Test modules import the fixtures by name::

    from service_dask import DaskCluster, dask_cluster  # noqa: F401
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

DASK = Path(sys.executable).with_name("dask")
_READY_S = 30.0
GPU_RESOURCE = "GPU"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def dask_missing() -> str:
    """Why this machine cannot run the test cluster, or ``""`` when it can."""
    if not DASK.exists():
        return f"{DASK} is missing; install cobalt's dask extra (scripts/bootstrap dev)"
    try:
        import distributed  # noqa: F401
    except ImportError:
        return "distributed is not installed; install cobalt's dask extra"
    return ""


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


@dataclass
class DaskCluster:
    """A running scheduler and its workers.

    Attributes:
        address: the scheduler's address (``tcp://127.0.0.1:PORT``).
        folder: the cluster's temporary folder (logs, worker spill space).
        processes: the scheduler and each worker's nanny, stopped by PID.
    """

    address: str
    folder: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def workers(self) -> dict[str, dict[str, Any]]:
        """The scheduler's workers now, by address (read with a client of the test's own,
        which may unpickle: it talks to a cluster the test started)."""
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            info: dict[str, dict[str, Any]] = client.scheduler_info(n_workers=-1)["workers"]
            return info

    def worker_pids(self) -> dict[str, int]:
        """Each worker's process id, by address."""
        from distributed import Client

        with Client(self.address, timeout=10, set_as_default=False) as client:
            pids: dict[str, int] = client.run(os.getpid)
            return pids

    def wait_workers(self, count: int, timeout: float = _READY_S) -> dict[str, dict[str, Any]]:
        """Waits until the scheduler has ``count`` workers; returns them."""
        deadline = time.monotonic() + timeout
        while True:
            workers = self.workers()
            if len(workers) >= count:
                return workers
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"the Dask scheduler has {len(workers)} of {count} workers after "
                    f"{timeout:g} s:\n{self.log()}"
                )
            time.sleep(0.2)

    def add_worker(self, *, nthreads: int, memory: str, resources: str) -> None:
        """Starts one worker (under a nanny) with these threads, memory limit and
        resources (``"GPU=2"``); returns once the scheduler counts it."""
        before = len(self.workers())
        log = (self.folder / f"worker-{len(self.processes)}.log").open("ab")
        process = subprocess.Popen(
            [
                str(DASK),
                "worker",
                self.address,
                "--host",
                "127.0.0.1",
                "--nthreads",
                str(nthreads),
                "--memory-limit",
                memory,
                "--resources",
                resources,
                "--no-dashboard",
                "--local-directory",
                str(self.folder),
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=log,
        )
        self.processes.append(process)
        self.wait_workers(before + 1)

    def log(self) -> str:
        """Every log of the cluster so far, for failure messages."""
        parts = []
        for path in sorted(self.folder.glob("*.log")):
            with contextlib.suppress(OSError):
                parts.append(f"== {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        for process in reversed(self.processes):
            _stop(process)


@contextlib.contextmanager
def running_dask(folder: Path) -> Iterator[DaskCluster]:
    """Starts a scheduler on a free loopback port, yields it (add workers with
    :meth:`DaskCluster.add_worker`), and stops everything by PID."""
    port = _free_port()
    log = (folder / "scheduler.log").open("ab")
    scheduler = subprocess.Popen(
        [
            str(DASK),
            "scheduler",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--no-dashboard",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    cluster = DaskCluster(f"tcp://127.0.0.1:{port}", folder, [scheduler])
    try:
        deadline = time.monotonic() + _READY_S
        while True:
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex(("127.0.0.1", port)) == 0:
                    break
            if scheduler.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the Dask scheduler did not start:\n{cluster.log()}")
            time.sleep(0.05)
        yield cluster
    finally:
        cluster.stop()


@contextlib.contextmanager
def _session_cluster(
    requires_service: Callable[..., None], prefix: str, **worker: Any
) -> Iterator[DaskCluster]:
    missing = dask_missing()
    requires_service("Dask", not missing, missing)
    with tempfile.TemporaryDirectory(prefix=prefix) as folder, running_dask(Path(folder)) as c:
        c.add_worker(**worker)
        yield c


@pytest.fixture(scope="session")
def dask_cluster(requires_service: Callable[..., None]) -> Iterator[DaskCluster]:
    """A scheduler and one worker of 2 threads, 4 GiB and ``GPU=2``, for the session."""
    with _session_cluster(
        requires_service, "cobalt-dask-", nthreads=2, memory="4GiB", resources="GPU=2"
    ) as cluster:
        yield cluster


@pytest.fixture(scope="session")
def dask_contract_cluster(requires_service: Callable[..., None]) -> Iterator[DaskCluster]:
    """A scheduler and one worker of the executor contract's size: 4 threads, 8 GiB
    and ``GPU=2``, for the session."""
    with _session_cluster(
        requires_service, "cobalt-dask-contract-", nthreads=4, memory="8GiB", resources="GPU=2"
    ) as cluster:
        yield cluster


def dask_config(cluster: DaskCluster, extra: str = "") -> str:
    """A controller's ``config.toml`` with a local executor and a Dask executor
    ``gpus`` on ``cluster``, whose ``GPU`` resources are emulated H100s; ``extra``
    lines go into ``gpus``'s table."""
    return f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
gateway_address = ""
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 1

[executors.gpus]
type = "dask"
address = "{cluster.address}"
gpu_resources = {{ h100 = "{GPU_RESOURCE}" }}
emulate_gpus = true
{extra}"""
