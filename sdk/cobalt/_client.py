"""The SDK's connection to a controller, with errors translated at the boundary.

No ``grpc.RpcError`` reaches users: :data:`_STATUS_TO_EXCEPTION` maps each
status to a cobalt exception, refined by the ``cobalt-error`` trailer the
controller sets.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc

from cobalt_common import errors
from cobalt_common.paths import cobalt_home, controller_file
from cobalt_common.processes import pid_running
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc

R = TypeVar("R")
MAX_MESSAGE = 1 << 30

_STATUS_TO_EXCEPTION: dict[grpc.StatusCode, type[errors.Error]] = {
    grpc.StatusCode.UNAVAILABLE: errors.ControllerUnavailableError,
    grpc.StatusCode.UNAUTHENTICATED: errors.AuthenticationError,
    grpc.StatusCode.NOT_FOUND: errors.NotFoundError,
    grpc.StatusCode.INVALID_ARGUMENT: errors.DispatchError,
    grpc.StatusCode.FAILED_PRECONDITION: errors.UnsatisfiableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: errors.WaitTimeoutError,
}
_BY_NAME: dict[str, type[errors.Error]] = {
    cls.__name__: cls
    for cls in vars(errors).values()
    if isinstance(cls, type) and issubclass(cls, errors.Error)
}


@dataclass(frozen=True, slots=True)
class ControllerInfo:
    address: str
    token: str
    pid: int = 0


_read_cache: dict[Path, tuple[tuple[int, int, int], ControllerInfo]] = {}
_alive_until: dict[int, float] = {}
ALIVE_TTL_S = 1.0
"""How long a controller seen running is taken to run, without asking again.

A controller that dies within it fails the next call as unavailable, which
forgets what was seen, so the caller's retry starts a new one."""


def read_controller_info(home: Path | None = None) -> ControllerInfo | None:
    """Where to reach the controller: the environment, else ``controller.json``.

    The file is parsed again only when it changes: a dispatch asks on every call.
    """
    address = os.environ.get("COBALT_CONTROLLER_ADDRESS")
    if address:
        return ControllerInfo(address, os.environ.get("COBALT_CONTROLLER_TOKEN", ""))
    path = controller_file(home)
    try:
        st = os.stat(path)
        stamp = (st.st_mtime_ns, st.st_size, st.st_ino)
        cached = _read_cache.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        data = json.loads(path.read_text())
        info = ControllerInfo(str(data["address"]), str(data["token"]), int(data.get("pid", 0)))
    except (OSError, ValueError, KeyError):
        return None
    _read_cache[path] = (stamp, info)
    return info


def translate(exc: grpc.RpcError, address: str) -> errors.Error:
    """The cobalt exception for a failed call."""
    code = exc.code()
    details = exc.details() or ""
    name = dict(exc.trailing_metadata() or ()).get("cobalt-error", "")
    if code == grpc.StatusCode.UNAVAILABLE:
        return errors.ControllerUnavailableError(
            f"no cobalt controller answers at {address}. Start one with "
            "`cobalt controller start`; `ct.dispatch` also starts one when none is running."
        )
    cls = _BY_NAME.get(name) or _STATUS_TO_EXCEPTION.get(code, errors.ControllerError)
    return cls(details or f"the controller answered {code.name}")


class Client:
    """A channel to one controller; every call goes through :meth:`call`."""

    def __init__(self, info: ControllerInfo) -> None:
        self.info = info
        self._channel = grpc.insecure_channel(
            info.address,
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE),
                ("grpc.max_send_message_length", MAX_MESSAGE),
                ("grpc.enable_http_proxy", 0),
            ],
        )
        self.stub = pb_grpc.ControllerStub(self._channel)
        self.metadata = (("authorization", f"Bearer {info.token}"),)

    def call(self, method: Callable[..., R], request: Any, timeout: float | None = None) -> R:
        try:
            return method(request, metadata=self.metadata, timeout=timeout)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.UNAVAILABLE:
                _alive_until.pop(self.info.pid, None)
            raise translate(exc, self.info.address) from None

    def call_interruptibly(self, method: Any, request: Any) -> Any:
        """A blocking call that Ctrl-C (a kernel interrupt) can stop.

        gRPC's blocking calls check for signals while they wait, so an
        interrupt raises KeyboardInterrupt here; a call through a future would
        cost a thread hand-off on every round trip.
        """
        return self.call(method, request)

    def stream(self, method: Callable[..., Iterator[R]], request: Any) -> Iterator[R]:
        try:
            yield from method(request, metadata=self.metadata)
        except grpc.RpcError as exc:
            raise translate(exc, self.info.address) from None

    def close(self) -> None:
        self._channel.close()


_clients: dict[tuple[str, str], Client] = {}
_lock = threading.Lock()


def get_client(*, start: bool = False) -> Client:
    """A client for the current controller; ``start=True`` starts one if needed."""
    home = cobalt_home()
    info = read_controller_info(home)
    if info is not None and (start and not _alive(info)):
        info = None
    if info is None:
        if not start:
            raise errors.ControllerUnavailableError(
                f"no cobalt controller is running for {home}. Start one with "
                "`cobalt controller start`; `ct.dispatch` also starts one when none is running."
            )
        from cobalt._embedded import start_controller

        info = start_controller(home, announce=True)
    key = (info.address, info.token)
    with _lock:
        client = _clients.get(key)
        if client is None:
            # A new token for the same address replaces the old one: each task
            # in a warm worker brings its own credential, and a restarted
            # controller its own token; the old client is dropped, not closed,
            # since another thread may still be reading from it.
            for old in [k for k in _clients if k[0] == info.address]:
                del _clients[old]
            client = _clients[key] = Client(info)
    return client


def _alive(info: ControllerInfo) -> bool:
    if os.environ.get("COBALT_CONTROLLER_ADDRESS"):
        return True
    now = time.monotonic()
    if _alive_until.get(info.pid, 0.0) > now:
        return True
    if not pid_running(info.pid):
        _alive_until.pop(info.pid, None)
        return False
    _alive_until[info.pid] = now + ALIVE_TTL_S
    return True


def controller_status(client: Client) -> pb.ControllerStatusResponse:
    resp = client.call(client.stub.ControllerStatus, pb.ControllerStatusRequest(), timeout=10)
    return cast(pb.ControllerStatusResponse, resp)


def dashboard_page(client: Client | None = None, dispatch_id: str = "") -> str:
    """The dashboard's address, or a dispatch's page on it; "" when there is none to reach.

    The address carries no token: it may end up in a saved notebook.
    """
    try:
        base = controller_status(client or get_client()).dashboard
    except errors.Error:
        return ""
    if not base or not dispatch_id:
        return base
    return f"{base.rstrip('/')}/dispatches/{dispatch_id}"
