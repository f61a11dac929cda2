"""Remote executors and the agent service their agents dial, over real gRPC on
loopback, without a controller: what the agent tests and the contract suites of
the remote executors share.

:class:`AgentRig` is an agents executor whose agents a test starts itself, each in
a thread; :class:`ServedRig` is an executor that starts its own agents (over SSH,
or as Slurm jobs) and is given the service's address to tell them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent import futures
from pathlib import Path
from typing import Any, Generic, TypeVar

import grpc
from support import wait_for

from cobalt_common.payloads import BlobLocation
from cobalt_common.v1 import agent_pb2_grpc
from cobalt_controller.agents import AgentKeys, AgentsServicer
from cobalt_executors import ExecutorContext, TaskOutcome
from cobalt_executors._machine import Machine
from cobalt_executors.agent._agent import Agent, AgentConfig
from cobalt_executors.base import AgentEndpoint
from cobalt_executors.remote import AgentsExecutor, RemoteExecutor

E = TypeVar("E", bound=RemoteExecutor)


def serve_agents(executor: RemoteExecutor, keys: AgentKeys) -> tuple[grpc.Server, str]:
    """The agent service for ``executor``, started on a free loopback port, and its address."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
    agent_pb2_grpc.add_AgentsServicer_to_server(
        AgentsServicer(lambda: [executor], keys, ""), server
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, f"127.0.0.1:{port}"


def _context(
    tmp_path: Path,
    report: Callable[[TaskOutcome], None],
    inline_limit: int,
    agents: AgentEndpoint | None = None,
) -> ExecutorContext:
    """A controller's context for a remote executor: outputs past ``inline_limit`` go
    to ``tmp_path/blobs``; ``agents`` is where agents it starts dial."""
    return ExecutorContext(
        inline_limit=inline_limit,
        output_location=BlobLocation.directory(tmp_path / "blobs"),
        report=report,
        machine=Machine(),
        work_dir=tmp_path / "controller-workers",
        agents=agents,
    )


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
        self.executor.setup(_context(tmp_path, report, inline_limit))
        self.keys = AgentKeys(tmp_path / "agent.key")
        self.server, self.address = serve_agents(self.executor, self.keys)
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


class ServedRig(Generic[E]):
    """``executor``, which starts its own agents, set up with the address of an agent
    service on a loopback port for them to dial (as a controller sets it up)."""

    def __init__(
        self,
        tmp_path: Path,
        executor: E,
        report: Callable[[TaskOutcome], None],
        *,
        inline_limit: int = 1024,
    ) -> None:
        self.blob_dir = tmp_path / "blobs"
        self.keys = AgentKeys(tmp_path / "agent.key")
        self.executor = executor
        self.server, self.address = serve_agents(executor, self.keys)
        endpoint = AgentEndpoint(self.address, "", self.keys.mint)
        executor.setup(_context(tmp_path, report, inline_limit, endpoint))

    def wait_attached(self, count: int = 1, timeout: float = 60) -> None:
        wait_for(
            lambda: len(self.executor.pool.agents()) >= count,
            timeout=timeout,
            what=f"{count} agent(s) to attach: {self.executor.describe()[0]}",
        )

    def close(self) -> None:
        self.executor.teardown()
        self.server.stop(grace=0)
