"""The Slurm executor passes the executor contract on a real single-node Slurm
cluster of the contract's size (4 CPUs, 8192 MB, two L4s as gres on dummy
devices; ``tests/service_slurm.py``): its pilot is an ``sbatch`` job whose agent
dials a real agent service over gRPC and runs each task in its warm workers.

A Slurm executor has no room until a pilot runs: it submits one when a task finds
none. So the harness begins as a scheduler would, offering a task of the whole
contract size, which is refused and starts a pilot of that size, and waits for
the pilot to attach; from then on the executor is the contract's size. When a
test ends, the executor is torn down and the harness waits for every job it
submitted (the pilot, and any a refused task asked for) to leave the cluster.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from executor_contract import GPU, ExecutorContract, ExecutorHarness
from pilot_harness import PilotHarness
from service_slurm import SlurmCluster, slurm_contract_cluster, slurm_options  # noqa: F401
from support import wait_for

from cobalt_executors import Allocation
from cobalt_executors.remote._pilots import WATCH_S
from cobalt_executors.slurm._executor import SlurmExecutor

pytestmark = pytest.mark.integration


class SlurmHarness(PilotHarness):
    """The local harness's tasks and gates, run by an agent in a Slurm pilot."""

    def __init__(self, tmp_path: Path, cluster: SlurmCluster, **options: Any) -> None:
        self.cluster = cluster
        super().__init__(
            tmp_path, SlurmExecutor("hpc", slurm_options(cluster, prefetch=0, **options))
        )
        try:
            (self.pilot_job,) = cluster.job_ids()
        except BaseException:
            self.close()
            raise

    def wait_gone(self) -> None:
        wait_for(
            lambda: not self.cluster.job_ids(),
            timeout=30,
            what="the executor's Slurm jobs to end after its teardown",
        )


class TestSlurmExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(
        self,
        tmp_path: Path,
        slurm_contract_cluster: SlurmCluster,  # noqa: F811
    ) -> Iterator[ExecutorHarness]:
        harness = SlurmHarness(tmp_path, slurm_contract_cluster)
        yield harness
        harness.close()


def test_a_pilot_holding_adopted_hardware_is_not_released_as_idle_until_it_is_released(
    tmp_path: Path,
    slurm_contract_cluster: SlurmCluster,  # noqa: F811
) -> None:
    idle_timeout_s = 1.0
    harness = SlurmHarness(tmp_path, slurm_contract_cluster, idle_timeout_s=idle_timeout_s)
    try:
        gpu = next(d for d in harness.executor.inventory().gpus if d.type == GPU)
        assert harness.executor.adopt("survivor", Allocation(1.0, 1024, (gpu,)).given())
        time.sleep(idle_timeout_s + 4 * WATCH_S)
        assert slurm_contract_cluster.job_ids() == [harness.pilot_job], "the pilot still runs"
        assert harness.executor.pool.agents(), "and its agent is attached"
        harness.executor.release("survivor")
        wait_for(
            lambda: not slurm_contract_cluster.job_ids(),
            timeout=idle_timeout_s + 10,
            what="the pilot, idle once the hardware is released, to be cancelled",
        )
    finally:
        harness.close()
