"""One workflow, unchanged, on every executor that can run here.

The lattice names an executor, ``remote``; only what ``config.toml`` says that
executor is changes from one run to the next: this machine's own workers, an
agent attached by hand, an SSH host (a real sshd on loopback), Slurm pilots
(a real cluster), pods of a Kubernetes cluster (the fake API server, whose
pods run as local processes), the workers of a Dask cluster (a real scheduler and worker),
or a Ray cluster's node (a real head, confined to loopback). The results, and
where each task ran, are the same.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from agent_process import AgentProcess, connected
from service_dask import dask_cluster  # noqa: F401
from service_kubernetes import kube, kube_options  # noqa: F401
from service_ray import ray_cluster, ray_options  # noqa: F401
from service_slurm import slurm_cluster, slurm_options, toml_lines  # noqa: F401
from service_sshd import sshd_server  # noqa: F401
from ssh_support import host_table
from support import wait_for
from test_ssh_executor import _toml

import cobalt as ct

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

KINDS = ["local", "agents", "ssh", "slurm", "kubernetes", "dask", "ray"]


@ct.electron(executor="remote")
def square(x: int) -> tuple[int, str]:
    return x * x, os.environ.get("SLURM_JOB_ID", "")


@ct.electron(executor="remote")
def total(values: list[tuple[int, str]]) -> int:
    return sum(v for v, _ in values)


@ct.lattice
def sum_of_squares(n: int) -> tuple[int, list[tuple[int, str]]]:
    squares = [square(i) for i in range(n)]
    return total(squares), squares


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _remote_table(kind: str, request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """What ``[executors.remote]`` says for ``kind``: the one line that differs."""
    if kind == "local":
        return 'type = "local"\nworkers = 2\n'
    if kind == "agents":
        return 'type = "agents"\n'
    if kind == "ssh":
        server = request.getfixturevalue("sshd_server")
        options: dict[str, Any] = {"hosts": [host_table(server, tmp_path / "host")], "workers": 2}
        return 'type = "ssh"\n' + "".join(f"{k} = {_toml(v)}\n" for k, v in options.items())
    if kind == "ray":
        ray = request.getfixturevalue("ray_cluster")
        monkeypatch = request.getfixturevalue("monkeypatch")
        for key, value in ray.driver_env.items():  # the executor's driver stays on loopback
            monkeypatch.setenv(key, value)
        options = ray_options(ray)
        return 'type = "ray"\n' + "".join(f"{k} = {_toml(v)}\n" for k, v in options.items())
    if kind == "kubernetes":
        fake = request.getfixturevalue("kube")
        options = kube_options(fake, tmp_path, pilot_cpus=2)
        return 'type = "kubernetes"\n' + "".join(f"{k} = {_toml(v)}\n" for k, v in options.items())
    if kind == "dask":
        dask = request.getfixturevalue("dask_cluster")
        return f'type = "dask"\naddress = "{dask.address}"\n'
    cluster = request.getfixturevalue("slurm_cluster")
    return 'type = "slurm"\n' + toml_lines(slurm_options(cluster, pilot_cpus=2))


@pytest.mark.parametrize("kind", KINDS)
def test_one_workflow_runs_unchanged_on_every_executor(
    kind: str,
    request: pytest.FixtureRequest,
    make_controller_home: Callable[..., ControllerHome],
    tmp_path: Path,
) -> None:
    home = make_controller_home(
        f"""\
[controller]
address = "127.0.0.1:{_free_port()}"
dashboard_address = ""
gateway_address = ""

[executors.local]
type = "local"
workers = 1

[executors.remote]
{_remote_table(kind, request, tmp_path)}"""
    )
    home.start()
    agent = AgentProcess(home, tmp_path / "agent") if kind == "agents" else None
    try:
        if agent is not None:
            wait_for(connected(home, 1), timeout=30, what=f"the agent: {agent.output()}")
        result = ct.dispatch_sync(sum_of_squares)(6)
        assert result.status == ct.Status.COMPLETED, result.error
        answer, squares = result.result
        assert answer == 55 and [v for v, _ in squares] == [0, 1, 4, 9, 16, 25]
        assert {t.executor for t in result.tasks} == {"remote"}, "every task ran there"
        jobs = {job for _, job in squares}
        assert ("" not in jobs) if kind == "slurm" else jobs == {""}, "in Slurm jobs, or not"
    finally:
        if agent is not None:
            agent.stop()
