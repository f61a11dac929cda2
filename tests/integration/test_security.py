"""The controller's security properties: it checks the token, keeps its credentials
private, and never unpickles a user's payload."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

import cobalt as ct
from cobalt import _client

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
