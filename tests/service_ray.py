"""A real single-node Ray cluster on loopback, for the tests of cobalt's Ray executor.

:func:`ray_cluster` starts ``ray start --head --block`` once per test session,
under a temporary folder of its own: its own temp dir (sessions, logs, sockets),
its own token file for Ray's token authentication (``RAY_AUTH_TOKEN_PATH``, never
the shared ``~/.ray``), free loopback ports for every server Ray starts, and no
dashboard. The node is the size the executor contract asks for
(:data:`NODE`: 4 CPUs, 8192 MB, two L4s declared as the custom resource
``GPU_L4``). It is stopped by the pid of ``ray start``, never with ``ray stop``,
which would stop every Ray cluster on the machine.

Before a test uses it, :func:`loopback_problem` checks that Ray is confined to
loopback: every TCP socket its processes listen on is bound to a loopback address,
and the node is registered under ``127.0.0.1``. When it is not, the tests skip
with what was found (and fail under ``CI=true``), as they do without ``ray``.

Test modules import the fixture by name::

    from service_ray import ray_cluster  # noqa: F401
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest

_READY_TIMEOUT_S = 60.0
_HINT = "install cobalt's ray extra: scripts/bootstrap dev"


LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
"""What keeps Ray on loopback on Linux: Ray turns ``127.0.0.1`` into the machine's
outward address unless it thinks it runs where clusters are off (macOS and
Windows by default), and this variable says so. The head and every driver need it."""


@dataclass(frozen=True, slots=True)
class NodeShape:
    cpus: int
    memory_mb: int
    gpu: str
    gpus: int

    @property
    def resource(self) -> str:
        return f"GPU_{self.gpu.upper()}"


NODE = NodeShape(cpus=4, memory_mb=8192, gpu="l4", gpus=2)
"""The executor contract's size: 4 CPUs, 8192 MB, two L4s (emulated)."""


@dataclass(frozen=True, slots=True)
class RayCluster:
    """A running head node."""

    address: str
    token_file: Path
    tmp: Path
    pid: int
    node: NodeShape

    @property
    def env(self) -> dict[str, str]:
        """The environment of a process that talks to this cluster."""
        return {
            **os.environ,
            **LOOPBACK_ENV,
            "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN_PATH": str(self.token_file),
        }

    @property
    def driver_env(self) -> dict[str, str]:
        """The variables a driver on this machine needs (the controller's, for the
        Ray executor's driver): loopback only."""
        return dict(LOOPBACK_ENV)

    def log_tail(self, lines: int = 30) -> str:
        out = self.tmp / "ray-start.log"
        return (
            "\n".join(out.read_text(errors="replace").splitlines()[-lines:]) if out.exists() else ""
        )


def ray_options(cluster: RayCluster, **overrides: Any) -> dict[str, Any]:
    """A Ray executor's options on ``cluster``; ``overrides`` replace or add options."""
    return {
        "address": cluster.address,
        "token_file": str(cluster.token_file),
        "gpu_resources": {cluster.node.gpu: cluster.node.resource},
        "reconnect_grace_s": 20,
        **overrides,
    }


def ray_config(cluster: RayCluster, **options: Any) -> str:
    """A controller's ``config.toml`` with a local executor and a Ray executor
    ``cluster`` on ``cluster``."""
    opts = ray_options(cluster, **options)
    table = opts.pop("gpu_resources")
    lines = "".join(f"{key} = {json.dumps(value)}\n" for key, value in opts.items())
    gpus = ", ".join(f"{key} = {json.dumps(value)}" for key, value in table.items())
    return f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
gateway_address = ""
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 1

[executors.cluster]
type = "ray"
{lines}gpu_resources = {{ {gpus} }}
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def why_ray_cannot_start() -> str:
    """Why the cluster cannot start here, or ``""`` when it can."""
    try:
        import ray  # noqa: F401
    except ImportError:
        return f"the ray package is not installed; {_HINT}"
    if _ray_binary() is None:
        return f"the ray command is not installed; {_HINT}"
    return ""


def _ray_binary() -> str | None:
    beside = Path(sys.executable).with_name("ray")
    return str(beside) if beside.exists() else shutil.which("ray")


def _tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def listening_addresses(pid: int) -> set[str]:
    """The local addresses on which the process ``pid`` and its descendants listen (TCP)."""
    found: set[str] = set()
    for process in _tree(pid):
        with contextlib.suppress(psutil.Error):
            for conn in process.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and conn.laddr:
                    found.add(str(conn.laddr.ip))
    return found


def registered_address(cluster: RayCluster) -> str:
    """The address under which the cluster registered its node (a driver asks)."""
    probe = (
        "import json, ray\n"
        f"ray.init(address={cluster.address!r}, log_to_driver=False, logging_level='ERROR')\n"
        "print(json.dumps([n['NodeManagerAddress'] for n in ray.nodes() if n['Alive']]))\n"
        "ray.shutdown()\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"a driver could not connect: {done.stderr[-2000:]}")
    addresses = json.loads(done.stdout.strip().splitlines()[-1])
    return ",".join(addresses)


def _loopback(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%")[0])
    mapped = ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) else None
    return ip.is_loopback or (mapped is not None and mapped.is_loopback)


def loopback_problem(cluster: RayCluster) -> str:
    """What keeps ``cluster`` from being confined to loopback, or ``""``."""
    outside = sorted(a for a in listening_addresses(cluster.pid) if not _loopback(a))
    registered = registered_address(cluster)
    problems = []
    if outside:
        problems.append(f"Ray listens on {', '.join(outside)}")
    if registered != "127.0.0.1":
        problems.append(f"Ray registered its node as {registered!r}")
    return "; ".join(problems)


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stops ``ray start --block`` by its pid (it stops the node's processes on
    SIGTERM), then kills what of its process group remains."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running_ray_cluster(node: NodeShape = NODE) -> Iterator[RayCluster]:
    """Starts a head node of ``node``'s size and stops it, by pid, when the block ends.

    Its temp dir is short (``/tmp/cr...``): Ray puts Unix sockets in it, whose
    paths must stay under 108 bytes.

    Raises:
        RuntimeError: ``ray start`` exited or the node was not up in time; the
            message holds its last output lines.
    """
    tmp = Path(tempfile.mkdtemp(prefix="cr", dir="/tmp"))
    token_file = tmp / "auth_token"
    low = _free_port()
    taken = set(range(low, low + 201))

    def port() -> int:
        """A free loopback port outside the workers' range and not handed out yet."""
        while (chosen := _free_port()) in taken:
            pass
        taken.add(chosen)
        return chosen

    gcs_port = port()
    cluster = RayCluster(
        address=f"127.0.0.1:{gcs_port}", token_file=token_file, tmp=tmp, pid=0, node=node
    )
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    ray = _ray_binary()
    assert ray is not None
    argv = [
        ray,
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--port={gcs_port}",
        f"--temp-dir={tmp / 'ray'}",
        f"--num-cpus={node.cpus}",
        "--num-gpus=0",
        f"--memory={node.memory_mb * 2**20}",
        "--object-store-memory=200000000",
        f"--resources={json.dumps({node.resource: node.gpus})}",
        "--include-dashboard=false",
        "--dashboard-host=127.0.0.1",
        f"--node-manager-port={port()}",
        f"--object-manager-port={port()}",
        f"--ray-client-server-port={port()}",
        f"--dashboard-agent-listen-port={port()}",
        f"--dashboard-agent-grpc-port={port()}",
        f"--metrics-export-port={port()}",
        f"--runtime-env-agent-port={port()}",
        f"--min-worker-port={low}",
        f"--max-worker-port={low + 200}",
    ]
    with (tmp / "ray-start.log").open("ab") as out:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=cluster.env,
            start_new_session=True,
        )
    cluster = RayCluster(cluster.address, token_file, tmp, process.pid, node)
    try:
        _wait_up(cluster, process)
        yield cluster
    finally:
        _stop(process)
        shutil.rmtree(tmp, ignore_errors=True)


def _wait_up(cluster: RayCluster, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"ray start exited ({process.returncode}):\n{cluster.log_tail()}")
        if "Ray runtime started" in cluster.log_tail(200):
            return
        time.sleep(0.2)
    raise RuntimeError(
        f"the Ray head was not up {_READY_TIMEOUT_S:g} s after start:\n{cluster.log_tail()}"
    )


@pytest.fixture(scope="session")
def ray_cluster(
    requires_service: Callable[..., None],
) -> Iterator[RayCluster]:
    """One head node of the contract's size for the whole session, confined to loopback."""
    why = why_ray_cannot_start()
    requires_service("Ray", not why, why)
    with running_ray_cluster() as cluster:
        problem = loopback_problem(cluster)
        requires_service(
            "a Ray cluster confined to loopback",
            not problem,
            problem + "; see docs/executors-ray.md",
        )
        yield cluster
