"""The agents executor passes the executor contract: a real agent, dialled in over
gRPC on loopback, runs each task in its warm workers (the local executor inside it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_support import AgentRig
from executor_contract import CPUS, GPU, GPUS, MEMORY_MB, ExecutorContract, ExecutorHarness, Reports
from test_local_executor_contract import LocalHarness, _contract_task, _payload

pytestmark = pytest.mark.integration


class AgentHarness(LocalHarness):
    """The local harness's tasks and gates, run through an agent."""

    def __init__(self, tmp_path: Path) -> None:
        self.blob_dir = tmp_path / "blobs"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.reports = Reports()
        # Queueing ahead accepts tasks beyond the room the contract checks; it has
        # its own tests (tests/unit/test_agent_protocol.py).
        self.rig = AgentRig(tmp_path, self.reports, options={"prefetch": 0})
        self.executor = self.rig.executor
        self.reports.executor = self.executor
        self.rig.start_agent(
            {"workers": 2, "cpus": CPUS, "memory": MEMORY_MB, "emulate_gpus": {GPU: GPUS}}
        )
        self._function = _payload(_contract_task)

    def close(self) -> None:
        self.rig.close()


class TestAgentsExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[ExecutorHarness]:
        harness = AgentHarness(tmp_path)
        yield harness
        harness.close()
