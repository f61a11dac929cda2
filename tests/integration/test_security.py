"""The controller's security properties: it checks the token, keeps its credentials
private, and never unpickles a user's payload."""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

import cobalt as ct
from cobalt import _client
from cobalt._submit import build_request
from cobalt_common.deploy import Manifest, Route
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import ControllerHome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


# -- payloads are opaque to the controller ------------------------------------------


def record_unpickling(path: str, padding: bytes) -> str:
    """What unpickling a :class:`Tripwire` runs: it notes which process unpickled it."""
    with open(path, "a") as file:
        file.write(f"{os.getpid()}\n")
    return f"unpickled with {len(padding)} bytes of padding"


class Tripwire:
    """A value whose unpickling writes the unpickling process's pid to a file."""

    def __init__(self, path: str, padding: int = 0) -> None:
        self.path = path
        self.padding = b"x" * padding

    def __reduce__(self) -> tuple[Any, ...]:
        return (record_unpickling, (self.path, self.padding))


def refuse_unpickling(message: str) -> None:
    raise RuntimeError(message)


class Unloadable:
    """A value that pickles fine but whose unpickling raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (refuse_unpickling, ("this value cannot be unpickled anywhere",))


@ct.electron
def receive(value: Any) -> tuple[Any, int]:
    return value, os.getpid()


@ct.electron
def unrelated() -> str:
    return "fine"


@ct.lattice
def receive_both(small: Tripwire, large: Tripwire) -> list[tuple[Any, int]]:
    return [receive(small), receive(large)]


@ct.lattice
def receive_unloadable(value: Unloadable) -> list[Any]:
    return [receive(value), unrelated()]


def test_the_controller_never_unpickles_a_payload_workers_do(
    controller_home: ControllerHome, tmp_path: Path
) -> None:
    marker = tmp_path / "unpickled-by"
    small, large = Tripwire(str(marker)), Tripwire(str(marker), padding=200 * 1024)
    result = ct.dispatch_sync(receive_both)(small, large)
    assert result.status == ct.Status.COMPLETED, result.error
    (small_seen, small_pid), (large_seen, large_pid) = result.result
    assert small_seen == "unpickled with 0 bytes of padding"
    assert large_seen == f"unpickled with {200 * 1024} bytes of padding"
    pids = {int(line) for line in marker.read_text().split()}
    assert pids == {small_pid, large_pid}, "only the workers that ran the tasks unpickled"
    assert controller_home.pid not in pids
    assert os.getpid() not in pids


def test_a_payload_that_cannot_be_unpickled_is_stored_and_routed_and_fails_its_task(
    controller_home: ControllerHome, registered_dispatches: Callable[[], set[str]]
) -> None:
    dispatch_id = ct.dispatch(receive_unloadable)(Unloadable())
    assert dispatch_id in registered_dispatches(), "the controller accepted the opaque bytes"
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.FAILED
    by_name = {t.name: t for t in result.tasks}
    failed = by_name["receive"]
    assert failed.status == ct.Status.FAILED
    assert "RuntimeError: this value cannot be unpickled anywhere" in failed.error
    assert "in refuse_unpickling" in failed.error
    assert by_name["unrelated"].status == ct.Status.COMPLETED
    status = controller_home.cli("controller", "status")
    assert f"(pid {controller_home.pid})" in status.stdout, "the controller is unharmed"


# -- the token -----------------------------------------------------------------------


@ct.electron
def one() -> int:
    return 1


@ct.lattice
def one_flow() -> int:
    return one()


@pytest.fixture
def connect_with(
    controller_home: ControllerHome, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[[str], None]]:
    """Point the SDK at the real controller's address with a token of the test's choosing."""

    def connect(token: str) -> None:
        monkeypatch.setenv("COBALT_CONTROLLER_ADDRESS", controller_home.address)
        monkeypatch.setenv("COBALT_CONTROLLER_TOKEN", token)
        _client._clients.clear()

    yield connect
    monkeypatch.undo()
    _client._clients.clear()


@pytest.mark.parametrize("token", ["wrong-token", ""], ids=["wrong", "missing"])
def test_a_wrong_token_is_refused(
    token: str,
    controller_home: ControllerHome,
    connect_with: Callable[[str], None],
    registered_dispatches: Callable[[], set[str]],
) -> None:
    before = registered_dispatches()
    connect_with(token)
    with pytest.raises(ct.AuthenticationError, match="token"):
        ct.get_result("any-id")
    with pytest.raises(ct.AuthenticationError):
        ct.dispatch(one_flow)()
    connect_with(controller_home.info()["token"])  # type: ignore[index]
    assert registered_dispatches() == before


def test_the_right_token_from_the_environment_is_accepted(
    controller_home: ControllerHome, connect_with: Callable[[str], None]
) -> None:
    connect_with(controller_home.info()["token"])  # type: ignore[index]
    assert ct.dispatch_sync(one_flow)().result == 1


def test_only_the_owner_can_read_the_controllers_address_and_token(
    controller_home: ControllerHome,
) -> None:
    mode = stat.S_IMODE((controller_home.path / "controller.json").stat().st_mode)
    assert mode == 0o600
    assert controller_home.address.startswith("127.0.0.1:"), "it listens on loopback only"


# -- content addresses and ids from requests ---------------------------------------


def raw_call(method: Callable[..., Any], request: Any) -> Any:
    """Call the controller with the token but without the SDK's error translation."""
    client = _client.get_client()
    response = method(request, metadata=client.metadata, timeout=30)
    return list(response) if hasattr(response, "__next__") else response


def refusal(method: Callable[..., Any], request: Any) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        raw_call(method, request)
    return refused.value


NOT_CONTENT_ADDRESSES = {
    "system file": "/etc/passwd",
    "token file": "./../controller.json",
    "controller environment": "/proc/self/environ",
    "uppercase": "A" * 64,
    "ten megabytes": "a" * (10 * 1024 * 1024),
}


@pytest.mark.parametrize("name", NOT_CONTENT_ADDRESSES.values(), ids=NOT_CONTENT_ADDRESSES.keys())
def test_blob_rpcs_refuse_a_name_that_is_not_a_content_address(
    controller_home: ControllerHome, name: str
) -> None:
    stub = _client.get_client().stub
    log = controller_home.path / "controller.log"
    log_size = log.stat().st_size
    for method, request in (
        (stub.BlobGet, pb.BlobGetRequest(sha256=name)),
        (stub.BlobHas, pb.BlobHasRequest(sha256=[name])),
        (stub.BlobPut, iter([pb.BlobChunk(sha256=name, data=b"never stored")])),
    ):
        refused = refusal(method, request)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "64 lowercase hex digits" in refused.details()
        assert len(refused.details()) < 300, "the name is not echoed back whole"
    assert log.stat().st_size - log_size < 4096, "nor written to the controller's log"
    assert not list((controller_home.path / "blobs").rglob("*never*"))


@ct.electron
def double(x: int) -> int:
    return 2 * x


@ct.lattice
def double_flow(x: int) -> int:
    return double(x)


@ct.electron
def greet() -> str:
    return "hello"


@ct.lattice
def greet_flow() -> str:
    return greet()


def function_sha(request: pb.DispatchCreateRequest, name: str) -> str:
    return next(n.function_sha256 for n in request.nodes if n.name == name)


def test_an_inline_payload_under_another_payloads_sha256_is_refused_and_not_stored(
    controller_home: ControllerHome, registered_dispatches: Callable[[], set[str]]
) -> None:
    honest, _ = build_request(double_flow.build_graph(21))
    target = function_sha(honest, "double")
    attack, _ = build_request(greet_flow.build_graph())
    attack.payloads.add(sha256=target, data=b"POISONED", size=8)
    before = registered_dispatches()
    stub = _client.get_client().stub
    refused = refusal(stub.DispatchCreate, attack)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "does not hash to its sha256" in refused.details()
    assert registered_dispatches() == before, "the whole request was refused"
    missing = raw_call(stub.BlobHas, pb.BlobHasRequest(sha256=[target])).missing
    assert list(missing) == [target], "the poisoned bytes were not stored"
    assert ct.dispatch_sync(double_flow)(21).result == 42


def test_a_dispatch_naming_a_path_as_its_function_is_refused(
    controller_home: ControllerHome,
) -> None:
    request, _ = build_request(greet_flow.build_graph())
    for node in request.nodes:
        node.function_sha256 = "../controller.json"
    refused = refusal(_client.get_client().stub.DispatchCreate, request)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "64 lowercase hex digits" in refused.details()


def test_a_megabyte_dispatch_id_is_not_found_with_a_short_message(
    controller_home: ControllerHome,
) -> None:
    stub = _client.get_client().stub
    huge = "d" * (1 << 20)
    for method, request in (
        (stub.DispatchGet, pb.DispatchGetRequest(dispatch_id=huge)),
        (stub.DispatchCancel, pb.DispatchCancelRequest(dispatch_id=huge)),
        (stub.TaskList, pb.TaskListRequest(dispatch_id=huge)),
        (stub.NodeGet, pb.NodeGetRequest(dispatch_id=huge, node_id=1)),
    ):
        refused = refusal(method, request)
        assert refused.code() == grpc.StatusCode.NOT_FOUND, refused.details()
        assert f"{1 << 20} characters" in refused.details()
        assert len(refused.details()) < 300


def test_a_megabyte_deployment_name_is_not_found_with_a_short_message(
    controller_home: ControllerHome,
) -> None:
    stub = _client.get_client().stub
    refused = refusal(stub.DeploymentGet, pb.DeploymentGetRequest(name="n" * (1 << 20)))
    assert refused.code() == grpc.StatusCode.NOT_FOUND, refused.details()
    assert len(refused.details()) < 300


def test_a_deployment_with_an_inline_payload_under_another_sha256_is_refused(
    controller_home: ControllerHome,
) -> None:
    honest = b"the service's pickled entry"
    target = hashlib.sha256(honest).hexdigest()
    request = pb.DeploymentCreateRequest(
        name="poisoned",
        manifest_json=Manifest("poisoned", (Route("predict", "/predict"),)).to_json(),
        service_sha256=target,
        payloads=[pb.Payload(sha256=target, data=b"POISONED", size=8)],
    )
    stub = _client.get_client().stub
    refused = refusal(stub.DeploymentCreate, request)
    assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.details()
    assert "does not hash to its sha256" in refused.details()
    missing = raw_call(stub.BlobHas, pb.BlobHasRequest(sha256=[target])).missing
    assert list(missing) == [target]
    assert refusal(stub.DeploymentGet, pb.DeploymentGetRequest(name="poisoned")).code() == (
        grpc.StatusCode.NOT_FOUND
    )
