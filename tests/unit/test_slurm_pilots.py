"""The Slurm executor's own pilot keeping, against a stand-in for Slurm's commands
whose ``sbatch`` answers when the test says (the executor on a real cluster is
tested in tests/integration/test_slurm_executor*.py)."""

from __future__ import annotations

import threading

import pytest

from cobalt_common.hardware import HardwareSpec
from cobalt_executors import ExecutorContext, PayloadRef, TaskSubmission
from cobalt_executors.base import AgentEndpoint
from cobalt_executors.slurm._executor import SlurmExecutor
from cobalt_executors.slurm._parse import JobState, NodeInfo, PartitionInfo

pytestmark = pytest.mark.unit


class HeldSbatch:
    """One node and partition; ``submit`` waits for :attr:`answer` and returns job 7."""

    def __init__(self) -> None:
        self.submitting = threading.Event()
        self.answer = threading.Event()
        self.cancelled: list[str] = []

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo("n1", cpus=4, real_memory_mb=8192, partitions=("debug",))]

    def partitions(self) -> list[PartitionInfo]:
        return [PartitionInfo("debug", default=True)]

    def submit(self, arguments: list[str], script: str) -> str:
        self.submitting.set()
        assert self.answer.wait(10)
        return "7"

    def cancel(self, job_id: str) -> None:
        self.cancelled.append(job_id)

    def jobs(self, job_ids: list[str]) -> dict[str, JobState]:
        return {}


def test_a_pilot_whose_sbatch_answers_after_teardown_began_is_cancelled_all_the_same() -> None:
    slurm = HeldSbatch()
    executor = SlurmExecutor("hpc", {})
    executor.cli = slurm  # type: ignore[assignment]
    executor.setup(
        ExecutorContext(
            inline_limit=1024,
            report=lambda _: None,
            agents=AgentEndpoint("127.0.0.1:1", "", lambda *_: "credential"),
        )
    )
    task = TaskSubmission("t", "d", 0, "t", HardwareSpec(), PayloadRef("0" * 64, b"f", 1), [])
    offered = threading.Thread(target=executor.try_submit, args=(task,))
    offered.start()
    assert slurm.submitting.wait(10), "the refused task asked for a pilot"
    executor.teardown()
    assert slurm.cancelled == [], "the pilot has no job id yet"
    slurm.answer.set()
    offered.join(10)
    assert slurm.cancelled == ["7"], "once it has one, the job is cancelled"
    assert executor.try_submit(task) is None and slurm.cancelled == ["7"], "and none follows"


def test_a_pilot_s_credential_outlasts_a_week_in_the_queue_and_its_walltime() -> None:
    slurm = HeldSbatch()
    slurm.answer.set()
    minted: list[float] = []

    def mint(executor: str, allocation: str, ttl_s: float) -> str:
        minted.append(ttl_s)
        return "credential"

    executor = SlurmExecutor("hpc", {"pilot_time": "30min"})
    executor.cli = slurm  # type: ignore[assignment]
    executor.setup(
        ExecutorContext(
            inline_limit=1024,
            report=lambda _: None,
            agents=AgentEndpoint("127.0.0.1:1", "", mint),
        )
    )
    try:
        task = TaskSubmission("t", "d", 0, "t", HardwareSpec(), PayloadRef("0" * 64, b"f", 1), [])
        assert executor.try_submit(task) is None, "no pilot yet: one is submitted"
        (ttl,) = minted
        assert 7 * 86400 + 29 * 60 < ttl <= 7 * 86400 + 40 * 60, ttl
    finally:
        executor.teardown()
