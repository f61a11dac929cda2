"""A real agent connected to an agents executor over real gRPC on loopback,
without a controller: what the executor contract suite and the agent tests share."""

from __future__ import annotations

import threading
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
from support import wait_for

from cobalt_common.payloads import BlobLocation
from cobalt_common.v1 import agent_pb2_grpc
from cobalt_controller.agents import AgentKeys, AgentsServicer
from cobalt_executors import ExecutorContext
from cobalt_executors._machine import Machine
from cobalt_executors.agent._agent import Agent, AgentConfig
from cobalt_executors.remote import AgentsExecutor


class AgentRig:
    """An agents executor named ``agents``, its agent service on a loopback port, and
    agents started with :meth:`start_agent` (each in a thread of this process)."""

    def __init__(
        self,
        tmp_path: Path,
        report: Any,
        *,
        options: dict[str, Any] | None = None,
        inline_limit: int = 1024,
    ) -> None:
        self.tmp_path = tmp_path
        self.blob_dir = tmp_path / "blobs"
        self.executor = AgentsExecutor("agents", options or {})
        self.executor.setup(
            ExecutorContext(
                inline_limit=inline_limit,
                output_location=BlobLocation.directory(self.blob_dir),
                report=report,
                machine=Machine(),
                work_dir=tmp_path / "controller-workers",
            )
        )
        self.keys = AgentKeys(tmp_path / "agent.key")
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        agent_pb2_grpc.add_AgentsServicer_to_server(
            AgentsServicer(lambda: [self.executor], self.keys, ""), self.server
        )
        port = self.server.add_insecure_port("127.0.0.1:0")
        self.address = f"127.0.0.1:{port}"
        self.server.start()
        self.agents: list[tuple[Agent, threading.Thread]] = []

    def start_agent(self, options: dict[str, Any], **config: Any) -> Agent:
        n = len(self.agents)
        agent = Agent(
            AgentConfig(
                controller=self.address,
                credential=self.keys.mint("agents"),
                executor="agents",
                work_dir=self.tmp_path / f"agent{n}",
                options=options,
                **config,
            )
        )
        thread = threading.Thread(target=agent.run, name=f"test-agent-{n}", daemon=True)
        thread.start()
        self.agents.append((agent, thread))
        wait_for(lambda: len(self.executor.pool.agents()) == n + 1, timeout=30)
        return agent

    def close(self) -> None:
        self.executor.teardown()
        for agent, thread in self.agents:
            agent.stop()
            thread.join(timeout=10)
        self.server.stop(grace=0)
