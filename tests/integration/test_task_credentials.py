"""A task holds its own credential, which reaches only its own dispatch and ends with it."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

import cobalt as ct
from cobalt import _client
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


def _attempt(call: Any, request: Any, metadata: Any) -> str:
    """The status a call ends with: ``OK`` or the gRPC code's name."""
    try:
        response = call(request, metadata=metadata, timeout=30)
        if hasattr(response, "__next__"):
            list(response)
    except grpc.RpcError as exc:
        return f"{exc.code().name}: {exc.details()}"
    return "OK"


@ct.electron
def probe(victim_id: str, victim_sha: str, secret: str) -> dict[str, Any]:
    """Calls the controller with the task's own credential, as a raw gRPC client."""
    token = os.environ["COBALT_CONTROLLER_TOKEN"]
    dispatch_id = os.environ["COBALT_DISPATCH_ID"]
    metadata = (("authorization", f"Bearer {token}"),)
    channel = grpc.insecure_channel(os.environ["COBALT_CONTROLLER_ADDRESS"])
    stub = pb_grpc.ControllerStub(channel)
    mine = stub.TaskList(
        pb.TaskListRequest(dispatch_id=dispatch_id, include_parameters=True),
        metadata=metadata,
        timeout=30,
    )
    own_sha = next(t.output_sha256 for t in mine.tasks if t.kind == pb.NODE_KIND_PARAMETER)
    calls = {
        "own payload": (stub.BlobGet, pb.BlobGetRequest(sha256=own_sha)),
        "own dispatch": (stub.DispatchGet, pb.DispatchGetRequest(dispatch_id=dispatch_id)),
        "other payload": (stub.BlobGet, pb.BlobGetRequest(sha256=victim_sha)),
        "other dispatch": (stub.DispatchGet, pb.DispatchGetRequest(dispatch_id=victim_id)),
        "other tasks": (stub.TaskList, pb.TaskListRequest(dispatch_id=victim_id)),
        "watch other": (stub.DispatchWatch, pb.DispatchWatchRequest(dispatch_id=victim_id)),
        "cancel other": (stub.DispatchCancel, pb.DispatchCancelRequest(dispatch_id=victim_id)),
        "cancel own": (stub.DispatchCancel, pb.DispatchCancelRequest(dispatch_id=dispatch_id)),
        "list dispatches": (stub.DispatchList, pb.DispatchListRequest()),
        "cost": (stub.CostSummary, pb.CostSummaryRequest()),
        "list deployments": (stub.DeploymentList, pb.DeploymentListRequest()),
        "get deployment": (stub.DeploymentGet, pb.DeploymentGetRequest(name="anything")),
        "tear down": (stub.DeploymentTeardown, pb.DeploymentGetRequest(name="anything")),
        "rotate": (stub.DeploymentTokenRotate, pb.DeploymentGetRequest(name="anything")),
        "deploy": (stub.DeploymentCreate, pb.DeploymentCreateRequest(name="anything")),
        "stop controller": (stub.ControllerStop, pb.ControllerStopRequest()),
    }
    answers = {what: _attempt(call, req, metadata) for what, (call, req) in calls.items()}
    has = stub.BlobHas(pb.BlobHasRequest(sha256=[own_sha, victim_sha]), metadata=metadata)
    channel.close()
    try:
        with open("/proc/self/environ", "rb") as file:
            worker_env = file.read().split(b"\0")
    except OSError:
        worker_env = []
    return {
        "token": token,
        "attempt": os.environ["COBALT_ATTEMPT_ID"],
        "answers": answers,
        "has_missing": list(has.missing),
        "own_sha": own_sha,
        "secret_seen": secret,
        "worker_env_has_token": any(v.startswith(b"COBALT_CONTROLLER_TOKEN=") for v in worker_env),
    }


@ct.lattice
def probe_flow(victim_id: str, victim_sha: str, secret: str) -> dict[str, Any]:
    return probe(victim_id, victim_sha, secret)


@ct.electron
def keep(value: str) -> str:
    return value


@ct.lattice
def victim_flow(value: str) -> str:
    return keep(value)


ALLOWED = ("own payload", "own dispatch")


@pytest.fixture(scope="module")
def probed(controller_home: ControllerHome) -> dict[str, Any]:
    """A victim dispatch, then a probe dispatch whose task tries to reach it."""
    victim = ct.dispatch_sync(victim_flow)("the victim's secret")
    assert victim.status == ct.Status.COMPLETED, victim.error
    client = _client.get_client()
    tasks = client.stub.TaskList(
        pb.TaskListRequest(dispatch_id=victim.dispatch_id, include_parameters=True),
        metadata=client.metadata,
    ).tasks
    victim_sha = next(t.output_sha256 for t in tasks if t.kind == pb.NODE_KIND_PARAMETER)
    result = ct.dispatch_sync(probe_flow)(victim.dispatch_id, victim_sha, "mine")
    assert result.status == ct.Status.COMPLETED, result.error
    return {
        **result.result,
        "dispatch_id": result.dispatch_id,
        "victim": victim,
        "victim_sha": victim_sha,
    }


def test_a_task_holds_its_own_credential_not_the_users_token(
    probed: dict[str, Any], controller_home: ControllerHome
) -> None:
    user_token = controller_home.info()["token"]  # type: ignore[index]
    assert probed["token"] and probed["token"] != user_token
    dispatch_id, node_id, attempt = probed["attempt"].split("/")
    assert (dispatch_id, node_id.isdigit(), attempt) == (probed["dispatch_id"], True, "1")
    assert not probed["worker_env_has_token"], "the warm worker's own environment has no token"


def test_a_tasks_credential_reaches_its_own_dispatch(probed: dict[str, Any]) -> None:
    for what in ALLOWED:
        assert probed["answers"][what] == "OK", what
    assert probed["has_missing"] == [probed["victim_sha"]], "another's payload reads as missing"


@pytest.mark.parametrize(
    "what",
    [
        "other payload",
        "other dispatch",
        "other tasks",
        "watch other",
        "cancel other",
        "cancel own",
        "list dispatches",
        "cost",
        "list deployments",
        "get deployment",
        "tear down",
        "rotate",
        "deploy",
        "stop controller",
    ],
)
def test_a_tasks_credential_cannot_reach_anything_else(probed: dict[str, Any], what: str) -> None:
    answer = probed["answers"][what]
    assert answer.startswith("PERMISSION_DENIED: "), answer
    assert "needs the user's token" in answer


def test_what_a_task_was_refused_is_unharmed(
    probed: dict[str, Any], controller_home: ControllerHome
) -> None:
    victim = ct.get_result(probed["victim"].dispatch_id)
    assert victim.status == ct.Status.COMPLETED and victim.result == "the victim's secret"
    status = controller_home.cli("controller", "status")
    assert f"(pid {controller_home.pid})" in status.stdout, "the controller still runs"


def test_a_tasks_credential_is_refused_once_the_task_ended(
    probed: dict[str, Any], controller_home: ControllerHome
) -> None:
    metadata = (("authorization", f"Bearer {probed['token']}"),)
    channel = grpc.insecure_channel(controller_home.address)
    stub = pb_grpc.ControllerStub(channel)
    try:
        for call, request in (
            (stub.BlobGet, pb.BlobGetRequest(sha256=probed["own_sha"])),
            (stub.DispatchGet, pb.DispatchGetRequest(dispatch_id=probed["dispatch_id"])),
        ):
            answer = _attempt(call, request, metadata)
            assert answer.startswith("UNAUTHENTICATED: "), answer
            assert "expired" in answer
    finally:
        channel.close()


@ct.electron
def nested_leaf(x: int) -> int:
    return x + 1


@ct.lattice
def nested_inner(x: int) -> int:
    return nested_leaf(x)


@ct.electron
def credential_of_this_task() -> str:
    return os.environ["COBALT_CONTROLLER_TOKEN"]


@ct.lattice
def outer_flow(x: int) -> list[Any]:
    return [ct.electron(nested_inner)(x), credential_of_this_task(), credential_of_this_task()]


def test_each_task_and_each_sublattice_task_gets_a_credential_of_its_own(
    tmp_path: Path,
) -> None:
    result = ct.dispatch_sync(outer_flow)(1)
    assert result.status == ct.Status.COMPLETED, result.error
    value, first, second = result.result
    assert value == 2, "a sublattice still runs with its task's credential"
    assert first and second and first != second
