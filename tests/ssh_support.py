"""An SSH executor whose agents are started over SSH on a real sshd on loopback and
dial a real agent service, without a controller: what the SSH executor's
contract and unit-level integration tests share."""

from __future__ import annotations

import sys
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from service_sshd import SshdServer
from support import wait_for

from cobalt_common.payloads import BlobLocation
from cobalt_common.v1 import agent_pb2_grpc
from cobalt_controller.agents import AgentKeys, AgentsServicer
from cobalt_executors import ExecutorContext, TaskOutcome
from cobalt_executors._machine import Machine
from cobalt_executors.base import AgentEndpoint
from cobalt_executors.ssh import SshExecutor


def host_table(server: SshdServer, work_dir: Path, **fields: Any) -> dict[str, Any]:
    """The host table a user would write for ``server``; the host's Python is this one."""
    return {
        "host": server.host,
        "port": server.port,
        "user": server.user,
        "key_file": str(server.client_key),
        "known_hosts": str(server.known_hosts),
        "python": sys.executable,
        "work_dir": str(work_dir),
        **fields,
    }


class SshRig:
    """An SSH executor named ``lab`` and its agent service on a loopback port."""

    def __init__(
        self,
        tmp_path: Path,
        report: Callable[[TaskOutcome], None],
        options: dict[str, Any],
        *,
        inline_limit: int = 1024,
    ) -> None:
        self.blob_dir = tmp_path / "blobs"
        self.keys = AgentKeys(tmp_path / "agent.key")
        self.executor = SshExecutor("lab", options)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        agent_pb2_grpc.add_AgentsServicer_to_server(
            AgentsServicer(lambda: [self.executor], self.keys, ""), self.server
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self.server.start()
        self.executor.setup(
            ExecutorContext(
                inline_limit=inline_limit,
                output_location=BlobLocation.directory(self.blob_dir),
                report=report,
                machine=Machine(),
                work_dir=tmp_path / "controller-workers",
                agents=AgentEndpoint(self.address, "", self.keys.mint),
            )
        )

    def wait_attached(self, count: int = 1, timeout: float = 60) -> None:
        wait_for(
            lambda: len(self.executor.pool.agents()) >= count,
            timeout=timeout,
            what=f"{count} agent(s) to attach over SSH: {self.executor.describe()[0]}",
        )

    def close(self) -> None:
        self.executor.teardown()
        self.server.stop(grace=0)
