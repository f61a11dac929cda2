"""The SSH executor passes the executor contract: its agent is started over SSH on a
real sshd on loopback, dials a real agent service over gRPC, and runs each task in
its warm workers."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from executor_contract import CPUS, GPU, GPUS, MEMORY_MB, ExecutorContract, ExecutorHarness, Reports
from service_sshd import SshdServer, sshd_server  # noqa: F401
from ssh_support import SshRig, host_table
from test_local_executor_contract import LocalHarness, _contract_task, _payload

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(sys.platform != "linux", reason="sshd and process groups of Linux"),
]


class SshHarness(LocalHarness):
    """The local harness's tasks and gates, run by an agent started over SSH."""

    def __init__(self, tmp_path: Path, server: SshdServer) -> None:
        self.blob_dir = tmp_path / "blobs"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.reports = Reports()
        table = host_table(
            server, tmp_path / "host", cpus=CPUS, memory=f"{MEMORY_MB}MB", gpus={GPU: GPUS}
        )
        self.rig = SshRig(tmp_path, self.reports, {"hosts": [table], "workers": 2, "prefetch": 0})
        self.executor = self.rig.executor
        self.reports.executor = self.executor
        self.rig.wait_attached()
        self._function = _payload(_contract_task)

    def close(self) -> None:
        self.rig.close()


class TestSshExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(
        self,
        tmp_path: Path,
        sshd_server: SshdServer,  # noqa: F811
    ) -> Iterator[ExecutorHarness]:
        harness = SshHarness(tmp_path, sshd_server)
        yield harness
        harness.close()
