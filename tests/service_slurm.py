"""A real single-node Slurm cluster on loopback, for the tests of cobalt's Slurm support.

:func:`slurm_cluster` starts munge, slurmctld and slurmd from Debian's packages
(``scripts/services`` installs them) under a temporary folder of its own: its
own munge key and socket, free loopback ports, a cluster name no other cluster
uses. The node has 2 CPUs, 8000 MB and two H100s declared as gres on dummy
device files (:data:`TEST_NODE`), as the cluster the Slurm executor is tested
on. :func:`slurm_contract_cluster` starts a second one whose node is the size
the executor contract asks for (:data:`CONTRACT_NODE`: 4 CPUs, 8192 MB, two
L4s); it runs beside the first in the same session.

Test modules import a fixture by name::

    from service_slurm import slurm_cluster  # noqa: F401

and write a controller's ``config.toml`` for it with :func:`slurm_config`. A
benchmark may start one with :func:`running_slurm_cluster`.

Without the daemons, or without root (slurmd runs jobs as their user and
needs root for it), the tests skip, and fail under ``CI=true``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pytest

MUNGED = "/usr/sbin/munged"
MUNGEKEY = "/usr/sbin/mungekey"
SLURMCTLD = "/usr/sbin/slurmctld"
SLURMD = "/usr/sbin/slurmd"
_HINT = "run scripts/services as root to install munge, slurmctld, slurmd and slurm-client"
_READY_TIMEOUT_S = 30.0

SLURM_CONF = """\
ClusterName={cluster}
SlurmctldHost={host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
AuthType=auth/munge
AuthInfo=socket={tmp}/munge/munge.socket
CredType=cred/munge
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SlurmUser=root
SlurmdUser=root
StateSaveLocation={tmp}/state
SlurmdSpoolDir={tmp}/spool
SlurmctldPidFile={tmp}/run/slurmctld.pid
SlurmdPidFile={tmp}/run/slurmd.pid
SlurmctldLogFile={tmp}/log/slurmctld.log
SlurmdLogFile={tmp}/log/slurmd.log
SchedulerType=sched/backfill
SchedulerParameters=batch_sched_delay=0
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
GresTypes=gpu
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/filetxt
JobCompLoc={tmp}/log/jobcomp.txt
MinJobAge=300
{overrides}NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} \
Gres=gpu:{gpu}:{gpus} State=UNKNOWN
PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP
"""

GRES_CONF = "NodeName={host} Name=gpu Type={gpu} File={tmp}/dev/nvidia[0-{last}]\n"

OVERRIDES = "SlurmdParameters=config_overrides\n"
"""Makes slurmd take the node's size from ``slurm.conf``, not from the machine: a
node declaring more CPUs or memory than the machine has is otherwise registered
INVAL and drained (Slurm 22.05's behaviour; the option is for testing)."""


@dataclass(frozen=True)
class NodeShape:
    """The one node of a test cluster, and the cluster's name.

    Attributes:
        cluster: the ``ClusterName``; two clusters running at once differ in it.
        cpus: the node's CPUs.
        memory_mb: its ``RealMemory``.
        gpu: the gres type of its GPUs (dummy device files).
        gpus: how many.
        as_declared: whether slurmd takes the node's size from ``slurm.conf``
            whatever the machine has (see :data:`OVERRIDES`).
    """

    cluster: str
    cpus: int
    memory_mb: int
    gpu: str
    gpus: int
    as_declared: bool = False


TEST_NODE = NodeShape("cobalt-test", cpus=2, memory_mb=8000, gpu="h100", gpus=2)
"""The node the Slurm executor's own tests and the Slurm benchmark run on."""
CONTRACT_NODE = NodeShape(
    "cobalt-contract", cpus=4, memory_mb=8192, gpu="l4", gpus=2, as_declared=True
)
"""A node of exactly the executor contract's size (``tests/executor_contract.py``),
on a machine of any size."""


@dataclass
class SlurmCluster:
    """A running cluster.

    Attributes:
        conf: its ``slurm.conf``.
        env: the environment Slurm's commands need (this process's, with ``SLURM_CONF``).
        tmp: its folder; jobs may write files there.
        host: the node's name.
    """

    conf: Path
    env: dict[str, str]
    tmp: Path
    host: str

    def run(self, *argv: str, stdin: str | None = None) -> str:
        """Runs one of Slurm's commands against this cluster and returns its stdout."""
        done = subprocess.run(
            list(argv), input=stdin, env=self.env, capture_output=True, text=True, timeout=30
        )
        if done.returncode != 0:
            raise AssertionError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
        return done.stdout

    def job_ids(self) -> list[str]:
        """Every job slurmctld knows that has not ended."""
        return self.run("squeue", "-h", "-o", "%i").split()

    def log_tail(self, lines: int = 20) -> str:
        """The last lines of each daemon's log, for failure messages."""
        tails = []
        for log in sorted((self.tmp / "log").glob("*")):
            text = log.read_text(errors="replace").splitlines()[-lines:]
            tails.append(f"--- {log.name}\n" + "\n".join(text))
        return "\n".join(tails)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def slurm_options(cluster: SlurmCluster, **overrides: Any) -> dict[str, Any]:
    """A pilot-mode Slurm executor's options on ``cluster``: its GPUs are the dummy
    gres devices (emulated), pilots are small and short, each pilot's own output
    goes to the cluster's folder; ``overrides`` replace or add options. Tests that
    build an executor and those that start a controller set it up alike."""
    return {
        "slurm_conf": str(cluster.conf),
        "emulate_gpus": True,
        "pilot_memory": "1GB",
        "pilot_time": "10min",
        "idle_timeout_s": 30,
        "reconnect_grace_s": 20,
        "pilot_log_dir": str(cluster.tmp),
        **overrides,
    }


def toml_lines(options: dict[str, Any]) -> str:
    """``options`` (strings, numbers and booleans) as the lines of a TOML table."""
    return "".join(f"{key} = {json.dumps(value)}\n" for key, value in options.items())


def slurm_config(
    cluster: SlurmCluster, extra: str = "", *, gateway: bool = False, **options: Any
) -> str:
    """A controller's ``config.toml`` with a local executor and a Slurm executor
    ``hpc`` on ``cluster`` (:func:`slurm_options`, with ``options`` over them);
    ``extra`` lines go into ``hpc``'s table, and ``gateway`` turns the deployments'
    gateway on, on loopback, with autoscaling ticks of 0.2 s."""
    front = (
        'gateway_address = "127.0.0.1:0"\nautoscale_interval_s = 0.2'
        if gateway
        else ('gateway_address = ""')
    )
    return f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
{front}
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 1

[executors.hpc]
type = "slurm"
{toml_lines(slurm_options(cluster, **options))}{extra}"""


def why_slurm_cannot_start() -> str:
    """Why the cluster cannot start here, or ``""`` when it can."""
    absent = [
        path for path in (MUNGED, MUNGEKEY, SLURMCTLD, SLURMD) if not os.access(path, os.X_OK)
    ]
    absent += [
        name for name in ("sbatch", "squeue", "scontrol", "scancel") if not shutil.which(name)
    ]
    if absent:
        return f"missing {', '.join(absent)}; {_HINT}"
    if os.geteuid() != 0:
        return "slurmd must run as root to start jobs; run the Slurm tests as root"
    return ""


def _write_files(tmp: Path, host: str, node: NodeShape) -> Path:
    for folder in ("munge", "state", "spool", "run", "log", "dev"):
        (tmp / folder).mkdir(mode=0o700)
    for index in range(node.gpus):  # dummy character devices (/dev/null's numbers) as the GPUs
        os.mknod(tmp / "dev" / f"nvidia{index}", 0o600 | 0o020000, os.makedev(1, 3))
    subprocess.run(
        [MUNGEKEY, "--create", f"--keyfile={tmp / 'munge' / 'munge.key'}"],
        check=True,
        capture_output=True,
        timeout=30,
    )
    conf = tmp / "slurm.conf"
    ports = {"ctld_port": _free_port(), "slurmd_port": _free_port()}
    overrides = OVERRIDES if node.as_declared else ""
    conf.write_text(
        SLURM_CONF.format(host=host, tmp=tmp, overrides=overrides, **asdict(node), **ports)
    )
    (tmp / "gres.conf").write_text(
        GRES_CONF.format(host=host, tmp=tmp, gpu=node.gpu, last=node.gpus - 1)
    )
    return conf


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    """Starts a daemon in the foreground (so that its pid is the child's), output to ``log``."""
    with log.open("ab") as out:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stops one daemon by its pid: SIGTERM, then SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def _node_state(cluster: SlurmCluster) -> str:
    done = subprocess.run(
        ["scontrol", "show", "node", "-o"],
        env=cluster.env,
        capture_output=True,
        text=True,
        timeout=10,
    )
    for word in done.stdout.split():
        if word.startswith("State="):
            return word.removeprefix("State=")
    return done.stderr.strip() or "(no answer)"


def _wait_idle(cluster: SlurmCluster, daemons: list[subprocess.Popen[bytes]]) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    state = ""
    while time.monotonic() < deadline:
        dead = [process.args for process in daemons if process.poll() is not None]
        if dead:
            raise RuntimeError(f"{dead} exited while the cluster started:\n{cluster.log_tail()}")
        state = _node_state(cluster)
        if state == "IDLE":
            return
        time.sleep(0.1)
    raise RuntimeError(
        f"the Slurm node was not IDLE {_READY_TIMEOUT_S:g} s after start (last state: "
        f"{state}):\n{cluster.log_tail()}"
    )


def _cancel_all(cluster: SlurmCluster) -> None:
    """Cancels what the tests left, and waits (bounded) for the jobs' processes to end:
    they run under slurmstepd, which outlives a stopped slurmd."""
    with contextlib.suppress(Exception):
        ids = cluster.job_ids()
        if ids:
            cluster.run("scancel", *ids)
        deadline = time.monotonic() + 10
        while cluster.job_ids() and time.monotonic() < deadline:
            time.sleep(0.1)


@contextlib.contextmanager
def running_slurm_cluster(tmp: Path, node: NodeShape = TEST_NODE) -> Iterator[SlurmCluster]:
    """Starts the cluster of ``node`` in the empty folder ``tmp``, and stops its daemons
    by pid (cancelling what jobs remain) when the block ends, also on failure.

    Raises:
        RuntimeError: a daemon exited or the node was not IDLE in time; the
            message holds the daemons' last log lines.
        PermissionError: the dummy GPU devices cannot be made (no ``mknod``).
    """
    host = subprocess.run(
        ["hostname", "-s"], capture_output=True, text=True, check=True, timeout=10
    ).stdout.strip()
    conf = _write_files(tmp, host, node)
    cluster = SlurmCluster(
        conf=conf, env={**os.environ, "SLURM_CONF": str(conf)}, tmp=tmp, host=host
    )
    munge = tmp / "munge"
    daemons: list[subprocess.Popen[bytes]] = []
    try:
        daemons.append(
            _start(
                [
                    MUNGED,
                    "--foreground",
                    "--force",
                    f"--socket={munge / 'munge.socket'}",
                    f"--key-file={munge / 'munge.key'}",
                    f"--pid-file={tmp / 'run' / 'munged.pid'}",
                    f"--seed-file={munge / 'munged.seed'}",
                    f"--log-file={tmp / 'log' / 'munged.log'}",
                ],
                tmp / "log" / "munged.out",
            )
        )
        deadline = time.monotonic() + 10
        while not (munge / "munge.socket").exists():
            if daemons[0].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"munged did not create its socket:\n{cluster.log_tail()}")
            time.sleep(0.02)
        for daemon in (SLURMCTLD, SLURMD):
            name = Path(daemon).name
            daemons.append(_start([daemon, "-D", "-f", str(conf)], tmp / "log" / f"{name}.out"))
        _wait_idle(cluster, daemons)
        yield cluster
    finally:
        if len(daemons) == 3 and daemons[1].poll() is None:
            _cancel_all(cluster)
        for process in reversed(daemons):
            _stop(process)


def _session_cluster(
    tmp_path_factory: pytest.TempPathFactory,
    requires_service: Callable[..., None],
    node: NodeShape,
    folder: str,
) -> Iterator[SlurmCluster]:
    """The cluster of ``node`` in a session folder named after ``folder``; skipped (or
    failed under ``CI=true``) where Slurm cannot start."""
    missing = why_slurm_cannot_start()
    requires_service("Slurm", not missing, missing)
    with contextlib.ExitStack() as stack:
        try:
            cluster = stack.enter_context(
                running_slurm_cluster(tmp_path_factory.mktemp(folder), node)
            )
        except PermissionError as exc:
            requires_service("Slurm", False, f"cannot create the dummy GPU devices ({exc})")
        yield cluster


@pytest.fixture(scope="session")
def slurm_cluster(
    tmp_path_factory: pytest.TempPathFactory, requires_service: Callable[..., None]
) -> Iterator[SlurmCluster]:
    """A running single-node Slurm cluster (2 CPUs, 8000 MB, gres gpu:h100:2), stopped
    at the end of the session."""
    yield from _session_cluster(tmp_path_factory, requires_service, TEST_NODE, "slurm")


@pytest.fixture(scope="session")
def slurm_contract_cluster(
    tmp_path_factory: pytest.TempPathFactory, requires_service: Callable[..., None]
) -> Iterator[SlurmCluster]:
    """A running single-node Slurm cluster of the executor contract's size (4 CPUs,
    8192 MB, gres gpu:l4:2, declared whatever the machine has), stopped at the end of
    the session; it has its own folder, ports, munge and name, so it runs beside
    :func:`slurm_cluster`."""
    yield from _session_cluster(tmp_path_factory, requires_service, CONTRACT_NODE, "slurm-contract")
