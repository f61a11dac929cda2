"""Deployments on agents that dial in, end to end: a real controller, a real agent
process and a real replica on it, whose traffic is authenticated, and which outlives
a controller killed and restarted.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

import pytest
from agent_process import AgentProcess, agents, agents_config, connected, free_port  # noqa: F401
from support import wait_for

import cobalt as ct

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration


@ct.service(name="echo-remote", executor="remote", cpus=0.5, min_replicas=1, max_replicas=1)
def echo_remote(prefix: str) -> dict[str, str]:
    return {"prefix": prefix}


@echo_remote.endpoint("/echo")
def echo(prefix: str, text: str) -> dict[str, object]:
    return {"echo": f"{prefix}{text}", "pid": os.getpid()}


def test_a_deployment_replica_runs_on_an_agent_and_its_traffic_is_authenticated(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
) -> None:
    import httpx

    from cobalt._client import get_client
    from cobalt_common.v1 import controller_pb2 as pb

    home = make_controller_home(
        agents_config(free_port()).replace(
            'gateway_address = ""', 'gateway_address = "127.0.0.1:0"'
        )
    )
    home.start()
    agents(home, "--cpus", "2")
    wait_for(connected(home, 1), timeout=30, what="the agent to attach")
    with ct.deploy(echo_remote)(">> ") as dep:
        assert dep.call("/echo", text="hi")["echo"] == ">> hi"
        client = get_client()
        got = client.call(client.stub.DeploymentGet, pb.DeploymentGetRequest(name="echo-remote"))
        [replica] = [r for r in got.replicas if r.status == "ready"] or list(got.replicas)
        assert replica.executor == "remote"
        assert replica.url.startswith("http://127.0.0.1:"), "the address the agent advertised"
        with httpx.Client(timeout=30) as http:
            assert http.post(f"{dep.url}/echo", json={"text": "x"}).status_code == 401
            direct = http.post(f"{replica.url}/echo", json={"text": "x"})
            assert direct.status_code in (401, 403), "the replica itself wants its secret"


def test_a_replica_on_an_agent_outlives_a_controller_killed_and_restarted(
    make_controller_home: Callable[..., ControllerHome],
    agents: Callable[..., AgentProcess],  # noqa: F811
) -> None:
    """The restarted controller adopts the replica, which its agent claims when it
    reconnects, later than the reconnect grace: it goes on serving past the grace,
    and stops with its deployment."""
    config = agents_config(free_port()).replace(
        'gateway_address = ""', 'gateway_address = "127.0.0.1:0"'
    )
    home = make_controller_home(config.replace("reconnect_grace_s = 20", "reconnect_grace_s = 2"))
    home.start()
    agent = agents(home, "--cpus", "2")
    wait_for(connected(home, 1), timeout=30, what="the agent to attach")
    import httpx

    from cobalt._client import get_client
    from cobalt_common.v1 import controller_pb2 as pb

    with ct.deploy(echo_remote)(">> ") as dep:
        pid = dep.call("/echo", text="hi")["pid"]
        client = get_client()
        got = client.call(client.stub.DeploymentGet, pb.DeploymentGetRequest(name="echo-remote"))
        (replica,) = got.replicas
        os.kill(home.pid, signal.SIGKILL)
        os.kill(agent.proc.pid, signal.SIGSTOP)  # the agent comes back later than the grace
        try:
            home.start()
            time.sleep(3)
        finally:
            os.kill(agent.proc.pid, signal.SIGCONT)
        wait_for(connected(home, 1), timeout=30, what="the agent to come back")
        assert dep.call("/echo", text="again")["pid"] == pid, "the same replica serves"
        time.sleep(3)  # past the grace, in which a claimed task nobody asked for is stopped
        assert dep.call("/echo", text="still")["pid"] == pid, f"{agent.output()[-2000:]}"
        assert "adopted" in home.cli("deployments", "events", "echo-remote").stdout

    def refused() -> bool:
        try:
            httpx.get(f"{replica.url}/_cobalt/health", timeout=1, trust_env=False)
        except httpx.TransportError:
            return True
        return False

    wait_for(refused, timeout=30, what="the replica to stop with its deployment")
