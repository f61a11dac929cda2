"""The Dask executor passes the executor contract on a real Dask cluster of the
contract's size on loopback (one worker of 4 threads, 8 GiB and ``GPU=2``, whose
resources the executor offers as emulated L4s; ``tests/service_dask.py``): its
agent runs as a long-running Dask task on that worker, dials a real agent service
over gRPC, and runs each task in its warm workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_support import ServedRig
from executor_contract import GPU, ExecutorContract, ExecutorHarness, Reports
from service_dask import GPU_RESOURCE, DaskCluster, dask_contract_cluster  # noqa: F401
from test_local_executor_contract import LocalHarness, _contract_task, _payload

from cobalt_executors.dask import DaskExecutor

pytestmark = pytest.mark.integration


class DaskHarness(LocalHarness):
    """The local harness's tasks and gates, run by an agent on a Dask worker."""

    def __init__(self, tmp_path: Path, cluster: DaskCluster) -> None:
        self.blob_dir = tmp_path / "blobs"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.reports = Reports()
        # Queueing ahead accepts tasks beyond the room the contract checks; it has
        # its own tests (tests/unit/test_agent_protocol.py).
        options = {
            "address": cluster.address,
            "gpu_resources": {GPU: GPU_RESOURCE},
            "emulate_gpus": True,
            "workers": 2,
            "prefetch": 0,
        }
        self.rig = ServedRig(tmp_path, DaskExecutor("cluster", options), self.reports)
        self.executor = self.rig.executor
        self.reports.executor = self.executor
        try:
            self.rig.wait_attached()
        except BaseException:
            self.close()
            raise
        self._function = _payload(_contract_task)

    def close(self) -> None:
        self.rig.close()


class TestDaskExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(
        self,
        tmp_path: Path,
        dask_contract_cluster: DaskCluster,  # noqa: F811
    ) -> Iterator[ExecutorHarness]:
        harness = DaskHarness(tmp_path, dask_contract_cluster)
        yield harness
        harness.close()
