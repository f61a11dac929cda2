"""The local executor passes the executor contract with real worker processes.

Each task is a pickled function, pickled as a client pickles it, that a warm
worker unpickles and runs: it returns its argument, raises, or waits for a
file the test creates.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from executor_contract import (
    CPUS,
    GPU,
    GPUS,
    MEMORY_MB,
    ExecutorContract,
    ExecutorHarness,
    Reports,
    read_output,
)

from cobalt._pickling import dumps, sha256_hex
from cobalt_common.hardware import HardwareSpec
from cobalt_common.payloads import BlobLocation, write_blob
from cobalt_common.status import Status
from cobalt_executors import ExecutorContext, PayloadRef, TaskArg, TaskOutcome, TaskSubmission
from cobalt_executors._machine import Machine
from cobalt_executors.local import LocalExecutor
from cobalt_executors.local import _functions as local_functions

pytestmark = pytest.mark.integration


def _contract_task(value: Any, raises: str, gate: str) -> Any:
    import os
    import time

    while gate and not os.path.exists(gate):
        time.sleep(0.01)
    if raises:
        raise RuntimeError(raises)
    return value


def _payload(value: object) -> PayloadRef:
    data = dumps(value, lambda: ("value", "a contract task's payload"))
    return PayloadRef(sha256_hex(data), data, len(data))


class LocalHarness(ExecutorHarness):
    def __init__(self, tmp_path: Path, workers: int = 2) -> None:
        self.blob_dir = tmp_path / "blobs"
        self.gates = tmp_path / "gates"
        self.gates.mkdir()
        self.reports = Reports()
        self.executor = LocalExecutor(
            "local",
            {"workers": workers, "cpus": CPUS, "memory": MEMORY_MB, "emulate_gpus": {GPU: GPUS}},
        )
        self.reports.executor = self.executor
        self.executor.setup(
            ExecutorContext(
                inline_limit=1024,
                output_location=BlobLocation.directory(self.blob_dir),
                report=self.reports,
                machine=Machine(cpus=CPUS, memory_mb=MEMORY_MB),
                work_dir=tmp_path / "workers",
            )
        )
        self._function = _payload(_contract_task)

    def task(
        self,
        key: str,
        hardware: HardwareSpec | None = None,
        *,
        returns: Any = None,
        raises: str = "",
        holds: bool = False,
        stored: bool = False,
    ) -> TaskSubmission:
        gate = str(self.gates / key) if holds else ""
        payload = self._stored if stored else _payload
        return TaskSubmission(
            task_key=key,
            dispatch_id="d",
            node_id=0,
            name=f"task {key}",
            hardware=hardware or HardwareSpec(),
            function=self._stored(_contract_task) if stored else self._function,
            args=[TaskArg(i, "", payload(v)) for i, v in enumerate((returns, raises, gate))],
        )

    def _stored(self, value: object) -> PayloadRef:
        """``value`` pickled into the blob directory, as the controller's store keeps it."""
        inline = _payload(value)
        assert inline.data is not None
        write_blob(self.blob_dir, inline.sha256, inline.data)
        return PayloadRef(inline.sha256, None, 0, BlobLocation.directory(self.blob_dir))

    def let_finish(self, key: str) -> None:
        (self.gates / key).touch()

    def output_bytes(self, outcome: TaskOutcome) -> bytes:
        return read_output(outcome)


class TestLocalExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path) -> Iterator[ExecutorHarness]:
        harness = LocalHarness(tmp_path)
        yield harness
        harness.executor.teardown()


def _make_function(n: int) -> Any:
    return lambda: n


def test_a_worker_sent_more_functions_than_it_keeps_runs_a_forgotten_one_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(local_functions, "LIMIT", 3)
    harness = LocalHarness(tmp_path)
    try:
        for i in [0, 1, 2, 0, 3, 4, 1, 0]:
            key = f"f{len(harness.reports.keys())}"
            function = _payload(_make_function(i))
            harness.submit(TaskSubmission(key, "d", 0, key, HardwareSpec(), function, []))
            outcome = harness.reports.wait(key, quiet=0)[key]
            assert outcome.status == Status.COMPLETED, outcome.error
            assert cloudpickle.loads(harness.output_bytes(outcome)) == i
    finally:
        harness.executor.teardown()


def test_a_function_that_cannot_be_unpickled_fails_with_the_same_error_each_time(
    tmp_path: Path,
) -> None:
    harness = LocalHarness(tmp_path, workers=1)
    broken = PayloadRef("0" * 64, b"not a pickle", 12)
    try:
        for key in ("first", "again"):
            harness.submit(TaskSubmission(key, "d", 0, key, HardwareSpec(), broken, []))
            outcome = harness.reports.wait(key, quiet=0)[key]
            assert outcome.status == Status.FAILED
            assert "UnpicklingError" in outcome.error, outcome.error
    finally:
        harness.executor.teardown()
