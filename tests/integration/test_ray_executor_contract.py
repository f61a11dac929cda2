"""The Ray executor passes the executor contract on a real single-node Ray cluster
of the contract's size (4 CPUs, 8192 MB, two L4s as the custom resource
``GPU_L4``; ``tests/service_ray.py``), confined to loopback: its agent runs in a
Ray actor pinned to the node, dials a real agent service over gRPC and runs each
task in its warm workers.

The executor starts the agent itself once the driver reports the node, so the
harness waits for it to attach; from then on the executor is the contract's
size. When a test ends, the executor is torn down and the harness waits until
the node's resources are all free again, so the next test's agent can start.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from agent_support import ServedRig
from executor_contract import CPUS, GPU, GPUS, MEMORY_MB, ExecutorContract, ExecutorHarness, Reports
from service_ray import RayCluster, ray_cluster, ray_options  # noqa: F401
from test_local_executor_contract import LocalHarness, _contract_task, _payload

from cobalt_common.hardware import HardwareSpec
from cobalt_executors.ray import RayExecutor

pytestmark = pytest.mark.integration


def _agent_processes(controller: str) -> list[psutil.Process]:
    """The agents that dial ``controller``, found by their command lines."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        argv = process.info["cmdline"] or []
        if "cobalt_executors.agent" in argv and controller in argv:
            found.append(process)
    return found


class RayHarness(LocalHarness):
    """The local harness's tasks and gates, run by an agent in a Ray actor."""

    def __init__(self, tmp_path: Path, cluster: RayCluster, **options: Any) -> None:
        self.cluster = cluster
        self.blob_dir = tmp_path / "blobs"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.reports = Reports()
        # Queueing ahead accepts tasks beyond the room the contract checks; it has
        # its own tests (tests/unit/test_agent_protocol.py).
        executor = RayExecutor("cluster", ray_options(cluster, prefetch=0, **options))
        self.rig = ServedRig(tmp_path, executor, self.reports)
        self.executor = self.rig.executor
        self.reports.executor = self.executor
        self._function = _payload(_contract_task)
        try:
            self.rig.wait_attached()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.rig.close()


class TestRayExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(
        self,
        tmp_path: Path,
        ray_cluster: RayCluster,  # noqa: F811
        monkeypatch: pytest.MonkeyPatch,
    ) -> Iterator[ExecutorHarness]:
        for key, value in ray_cluster.driver_env.items():
            monkeypatch.setenv(key, value)
        harness = RayHarness(tmp_path, ray_cluster)
        yield harness
        harness.close()


def test_agents_per_node_splits_the_node_into_equal_agents_none_larger_than_its_share(
    tmp_path: Path,
    ray_cluster: RayCluster,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in ray_cluster.driver_env.items():
        monkeypatch.setenv(key, value)
    executor = RayExecutor("cluster", ray_options(ray_cluster, agents_per_node=2))
    rig = ServedRig(tmp_path, executor, Reports())
    try:
        rig.wait_attached(2)
        agents = executor.pool.agents()
        assert len(agents) == 2
        whole = executor.inventory()
        assert (whole.cpus, whole.memory_mb) == (CPUS, MEMORY_MB)
        assert sorted(d.type for d in whole.gpus) == [GPU] * GPUS
        assert executor.can_ever_run(HardwareSpec(cpus=CPUS / 2, gpu=GPU, gpus=GPUS // 2))
        assert not executor.can_ever_run(HardwareSpec(gpu=GPU, gpus=GPUS))
        assert not executor.can_ever_run(HardwareSpec(cpus=CPUS))
        processes = _agent_processes(rig.address)
        assert len(processes) == 2
        for process in processes:
            assert not any(arg.startswith("--token") for arg in process.cmdline())
            assert process.environ().get("COBALT_AGENT_TOKEN"), "the credential is in its env"
    finally:
        rig.close()
