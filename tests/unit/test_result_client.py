"""A Result asks the controller that produced it, whatever ``COBALT_HOME`` says later.

The controller here is a fake: a :class:`~cobalt._client.Client` whose RPC
methods answer from a dict and record each call. The current home has no
controller at all, so any call that went to the current home's client
instead would raise ``ControllerUnavailableError``. A client follows its own
home's controller when that one restarts (a new address and token).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cloudpickle
import pytest
from conftest import reset_clients

import cobalt as ct
from cobalt._client import Client, get_client
from cobalt._discovery import ControllerInfo
from cobalt._result import Result
from cobalt._runtime.task import TaskCallable
from cobalt_common.v1 import controller_pb2 as pb

pytestmark = pytest.mark.unit


def _scale(x: int, factor: int) -> int:
    if x > 2:
        raise ValueError(f"x={x} is too large")
    return x * factor


class FakeController(Client):
    """A controller's dispatches, nodes and blobs in memory, answering Client's RPCs."""

    def __init__(self) -> None:  # no channel: every RPC the SDK makes is overridden
        self.info = ControllerInfo("fake:1", "token")
        self.home = None
        self.calls: list[tuple[str, ...]] = []
        self.dispatches: dict[str, tuple[pb.Dispatch, bytes | None]] = {}
        self.tasks: dict[str, list[pb.TaskRecord]] = {}
        self.outputs: dict[tuple[str, int], bytes] = {}
        self.blobs: dict[str, bytes] = {}

    def dispatch_get(
        self,
        dispatch_id: str,
        *,
        include_output: bool = False,
        wait_s: float = 0.0,
        interruptible: bool = False,
    ) -> pb.DispatchGetResponse:
        self.calls.append(("dispatch_get", dispatch_id))
        dispatch, output = self.dispatches[dispatch_id]
        resp = pb.DispatchGetResponse(dispatch=dispatch)
        if include_output and output is not None:
            resp.output.CopyFrom(pb.Payload(sha256="out", data=output, size=len(output)))
        return resp

    def task_list(
        self, dispatch_id: str, *, include_parameters: bool = False
    ) -> list[pb.TaskRecord]:
        self.calls.append(("task_list", dispatch_id))
        return self.tasks[dispatch_id]

    def node_get(
        self, dispatch_id: str, node_id: int, *, include_output: bool = True
    ) -> tuple[pb.TaskRecord, bytes | None]:
        self.calls.append(("node_get", dispatch_id, str(node_id)))
        task = next(t for t in self.tasks[dispatch_id] if t.node_id == node_id)
        return task, self.outputs.get((dispatch_id, node_id)) if include_output else None

    def fetch_payload(self, payload: pb.Payload) -> bytes:
        self.calls.append(("fetch_payload", payload.sha256))
        return payload.data or self.blobs[payload.sha256]

    def dashboard_page(self, dispatch_id: str = "") -> str:
        self.calls.append(("dashboard_page", dispatch_id))
        return f"http://fake/dispatches/{dispatch_id}"

    def add(self, dispatch_id: str, status: int, tasks: list[pb.TaskRecord], output: Any) -> None:
        dispatch = pb.Dispatch(dispatch_id=dispatch_id, name=dispatch_id, status=status)
        value = None if output is None else cloudpickle.dumps(output)
        self.dispatches[dispatch_id] = (dispatch, value)
        self.tasks[dispatch_id] = tasks


def _task(node_id: int, name: str, status: int, **fields: Any) -> pb.TaskRecord:
    kind = fields.pop("kind", pb.NODE_KIND_ELECTRON)
    return pb.TaskRecord(node_id=node_id, name=name, kind=kind, status=status, **fields)


@pytest.fixture
def controller(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeController:
    """The controller results come from; COBALT_HOME then moves to an empty home."""
    fake = FakeController()
    fake.add(
        "done",
        pb.STATUS_COMPLETED,
        [
            _task(0, ":parameter:", pb.STATUS_COMPLETED, kind=pb.NODE_KIND_PARAMETER),
            _task(1, "double", pb.STATUS_COMPLETED),
        ],
        output=42,
    )
    fake.outputs[("done", 1)] = cloudpickle.dumps(42)
    fake.blobs["fn"] = cloudpickle.dumps(TaskCallable(_scale))
    fake.add(
        "parent",
        pb.STATUS_FAILED,
        [
            _task(1, "prepare", pb.STATUS_COMPLETED),
            _task(
                2,
                "inner",
                pb.STATUS_FAILED,
                kind=pb.NODE_KIND_SUBLATTICE,
                sublattice_dispatch_id="child",
            ),
        ],
        output=None,
    )
    fake.add(
        "child",
        pb.STATUS_FAILED,
        [
            _task(0, ":parameter:", pb.STATUS_COMPLETED, kind=pb.NODE_KIND_PARAMETER),
            _task(
                1,
                "scale",
                pb.STATUS_FAILED,
                error="Traceback (most recent call last):\nValueError: x=3 is too large\n",
                reason="exception",
                function_sha256="fn",
                inputs=[
                    pb.Input(parent=0, position=0),
                    pb.Input(parent=2, position=-1, keyword="factor"),
                ],
            ),
            _task(2, ":parameter:", pb.STATUS_COMPLETED, kind=pb.NODE_KIND_PARAMETER),
        ],
        output=None,
    )
    fake.outputs[("child", 0)] = cloudpickle.dumps(3)
    fake.outputs[("child", 2)] = cloudpickle.dumps(10)
    elsewhere = tmp_path / "another-home"
    elsewhere.mkdir()
    monkeypatch.setenv("COBALT_HOME", str(elsewhere))
    monkeypatch.delenv("COBALT_CONTROLLER_ADDRESS", raising=False)
    return fake


def _result(controller: FakeController, dispatch_id: str) -> Result:
    return Result.from_pb(controller.dispatch_get(dispatch_id), controller)


def test_the_current_home_has_no_controller_to_fall_back_on(controller: FakeController) -> None:
    with pytest.raises(ct.ControllerUnavailableError):
        ct.get_result("done")


def test_value_tasks_and_nodes_come_from_the_controller_that_produced_the_result(
    controller: FakeController,
) -> None:
    result = _result(controller, "done")
    controller.calls.clear()

    assert result.result == 42
    assert [t.name for t in result.tasks] == ["double"]
    assert result.get_node_result(1)["output"] == 42
    assert "http://fake/dispatches/done" in result._repr_html_()
    assert [call[0] for call in controller.calls] == [
        "dispatch_get",
        "fetch_payload",
        "task_list",
        "node_get",
        "dashboard_page",
    ], "a completed result reads its tasks once"


def test_a_failed_sublattice_is_followed_into_its_child_on_the_same_controller(
    controller: FakeController,
) -> None:
    result = _result(controller, "parent")

    with pytest.raises(ct.TaskFailedError, match="in sublattice 'inner' \\(node 2\\)") as info:
        result.raise_for_status()

    assert info.value.task_name == "scale" and info.value.dispatch_id == "child"
    assert "x=3 is too large" in info.value.remote_traceback
    assert ("task_list", "child") in controller.calls


def test_rerun_locally_fetches_the_function_and_inputs_from_the_same_controller(
    controller: FakeController,
) -> None:
    child = _result(controller, "child")

    with pytest.raises(ValueError, match="x=3 is too large"):
        child.rerun_locally(1)

    assert ("fetch_payload", "fn") in controller.calls
    assert {("node_get", "child", "0"), ("node_get", "child", "2")} <= set(controller.calls)


def _write_info(home: Path, address: str, token: str) -> None:
    tmp = home / "controller.json.tmp"
    tmp.write_text(json.dumps({"address": address, "token": token, "pid": os.getpid()}))
    os.replace(tmp, home / "controller.json")


@pytest.fixture
def fresh_clients() -> Iterator[None]:
    reset_clients()
    yield
    reset_clients()


@pytest.mark.usefixtures("fresh_clients")
def test_a_client_follows_its_own_homes_controller_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ours, other = tmp_path / "ours", tmp_path / "other"
    ours.mkdir()
    other.mkdir()
    monkeypatch.delenv("COBALT_CONTROLLER_ADDRESS", raising=False)
    monkeypatch.setenv("COBALT_HOME", str(ours))
    _write_info(ours, "127.0.0.1:1", "first")
    client = get_client()
    assert client.current() is client

    monkeypatch.setenv("COBALT_HOME", str(other))
    _write_info(other, "127.0.0.1:3", "elsewhere")
    assert client.current() is client, "another home's controller is not ours"

    _write_info(ours, "127.0.0.1:2", "second")  # our controller restarted
    restarted = client.current()
    assert (restarted.info.address, restarted.info.token) == ("127.0.0.1:2", "second")
    assert restarted.home == ours and restarted.current() is restarted


@pytest.mark.usefixtures("fresh_clients")
def test_a_client_named_by_the_environment_stays_with_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COBALT_HOME", str(tmp_path))
    monkeypatch.setenv("COBALT_CONTROLLER_ADDRESS", "127.0.0.1:4")
    monkeypatch.setenv("COBALT_CONTROLLER_TOKEN", "task-credential")
    client = get_client()
    assert client.home is None
    _write_info(tmp_path, "127.0.0.1:5", "a controller of the home")
    assert client.current() is client
