"""Agent processes for the tests: real ``python -m cobalt_executors.agent`` processes
dialling a real controller, started and stopped by a test.

Test modules import the fixture by name::

    from agent_process import agents  # noqa: F401
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from conftest import ControllerHome


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def agents_config(port: int, extra: str = "") -> str:
    return f"""\
[controller]
address = "127.0.0.1:{port}"
dashboard_address = ""
gateway_address = ""
retry_backoff_s = 0.05

[executors.local]
type = "local"
workers = 1

[executors.remote]
type = "agents"
reconnect_grace_s = 20
{extra}"""


class AgentProcess:
    """One ``python -m cobalt_executors.agent`` process of this test."""

    def __init__(
        self,
        home: ControllerHome,
        work_dir: Path,
        *args: str,
        token: str = "",
        controller: str = "",
    ) -> None:
        if not token:
            token = home.cli("agent-token", "--executor", "remote", "--quiet").stdout.strip()
        env = {k: v for k, v in os.environ.items() if not k.startswith("COBALT_")}
        env["COBALT_AGENT_TOKEN"] = token
        self.log = work_dir / "agent.log"
        work_dir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "cobalt_executors.agent",
                "--controller",
                controller or home.address,
                "--executor",
                "remote",
                "--work-dir",
                str(work_dir),
                "--workers",
                "1",
                *args,
            ],
            env=env,
            stdout=self.log.open("wb"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., AgentProcess]]:
    started: list[AgentProcess] = []

    def start(
        home: ControllerHome, *args: str, token: str = "", controller: str = ""
    ) -> AgentProcess:
        work_dir = tmp_path / f"agent{len(started)}"
        agent = AgentProcess(home, work_dir, *args, token=token, controller=controller)
        started.append(agent)
        return agent

    yield start
    for agent in started:
        agent.stop()


def connected(home: ControllerHome, count: int) -> Callable[[], bool]:
    def check() -> bool:
        status = home.cli("controller", "status").stdout
        return status.count("agent ") >= count and "no agent connected" not in status

    return check


def machine_address() -> str:
    """This machine's own non-loopback address: traffic to it stays on this machine."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks the interface
            address = str(s.getsockname()[0])
        except OSError:
            address = ""
    if not address or address.startswith("127."):
        pytest.skip("this machine has no non-loopback address to listen on")
    return address
