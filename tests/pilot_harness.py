"""The executor contract's harness for executors that start their agents in pilots
(Slurm jobs, Kubernetes pods): such an executor has no room until a pilot runs.

The harness begins as a scheduler would, offering a task of the whole contract size,
which is refused and starts a pilot of that size, and waits for the pilot's agent to
attach; from then on the executor is the contract's size. Its tasks and gates are the
local harness's, run by the pilot's agent.
"""

from __future__ import annotations

from pathlib import Path

from agent_support import ServedRig
from executor_contract import CPUS, GPU, GPUS, MEMORY_MB, Reports
from test_local_executor_contract import LocalHarness, _contract_task, _payload

from cobalt_common.hardware import HardwareSpec
from cobalt_executors.remote import PilotExecutor


class PilotHarness(LocalHarness):
    """``executor`` (built with ``prefetch = 0``: queueing ahead accepts tasks beyond
    the room the contract checks) set up against a real agent service, with one
    pilot of the contract's size attached."""

    def __init__(self, tmp_path: Path, executor: PilotExecutor) -> None:
        self.blob_dir = tmp_path / "blobs"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.reports = Reports()
        self.rig = ServedRig(tmp_path, executor, self.reports)
        self.executor = self.rig.executor
        self.reports.executor = self.executor
        self._function = _payload(_contract_task)
        whole = HardwareSpec(cpus=CPUS, memory_mb=MEMORY_MB, gpu=GPU, gpus=GPUS)
        try:
            assert self.executor.try_submit(self.task("pilot", whole)) is None, "no pilot yet"
            self.rig.wait_attached()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        self.rig.close()
        self.wait_gone()

    def wait_gone(self) -> None:
        """Waits until everything the executor started on the cluster has left it."""
