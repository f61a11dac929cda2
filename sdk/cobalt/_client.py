"""The SDK's connection to a controller, with errors translated at the boundary.

A :class:`Client` talks to one controller and owns the RPCs the rest of the
SDK makes (as httpx's module functions delegate to its ``Client``): whatever
holds a client, such as a :class:`~cobalt.Result`, keeps talking to the
controller it came from. :func:`get_client` gives the client of the current
``COBALT_HOME``, for the calls that start from nothing (``ct.get_result``).

No ``grpc.RpcError`` reaches users: :data:`_STATUS_TO_EXCEPTION` maps each
status to a cobalt exception, refined by the ``cobalt-error`` trailer the
controller sets.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar, cast

import grpc

from cobalt._discovery import ControllerInfo, read_controller_info
from cobalt._embedded import start_controller
from cobalt_common import errors
from cobalt_common.channel import open_channel
from cobalt_common.paths import cobalt_home
from cobalt_common.processes import pid_running
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc

R = TypeVar("R")
MAX_MESSAGE = 1 << 30
_CHUNK = 1 << 20

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


_alive_until: dict[int, float] = {}
ALIVE_TTL_S = 1.0
"""How long a controller seen running is taken to run, without asking again.

A controller that dies within it fails the next call as unavailable, which
forgets what was seen, so the caller's retry starts a new one."""


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
    """A channel to one controller; every call goes through :meth:`call`.

    Args:
        info: where the controller listens, and its token.
        home: the ``COBALT_HOME`` the controller was found through, so that
            :meth:`current` follows it across restarts; ``None`` when the
            environment named the controller (in a task or a replica).
    """

    def __init__(self, info: ControllerInfo, home: Path | None = None) -> None:
        self.info = info
        self.home = home
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            ("grpc.enable_http_proxy", 0),
        ]
        if info.fingerprint:
            self._channel = open_channel(info.address, info.fingerprint, options)
        else:
            self._channel = grpc.insecure_channel(info.address, options=options)
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

    def current(self) -> Client:
        """This controller's client as it is now: ``self``, or, once the controller of its
        home has restarted (a new address or token), the client of the new one.

        What keeps a client (a Result, a deployment handle) asks through this, so it
        follows its own controller across restarts, and never the controller of
        whichever ``COBALT_HOME`` is current.
        """
        if self.home is None:
            return self
        info = read_controller_info(self.home)
        if info is None or (info.address, info.token) == (self.info.address, self.info.token):
            return self
        return _client_for(info, self.home)

    # ---- the RPCs the SDK makes ------------------------------------------------------

    def status(self) -> pb.ControllerStatusResponse:
        """The controller's process, version, executors and dashboard address."""
        resp = self.call(self.stub.ControllerStatus, pb.ControllerStatusRequest(), timeout=10)
        return cast(pb.ControllerStatusResponse, resp)

    def dashboard_page(self, dispatch_id: str = "") -> str:
        """The dashboard's address, or a dispatch's page on it; "" when there is none to reach.

        The address carries no token: it may end up in a saved notebook.
        """
        try:
            base = self.status().dashboard
        except errors.Error:
            return ""
        if not base or not dispatch_id:
            return base
        return f"{base.rstrip('/')}/dispatches/{dispatch_id}"

    def dispatch_get(
        self,
        dispatch_id: str,
        *,
        include_output: bool = False,
        wait_s: float = 0.0,
        interruptible: bool = False,
    ) -> pb.DispatchGetResponse:
        """A dispatch's state; ``wait_s`` lets the controller answer when it ends, if sooner.

        ``interruptible``: Ctrl-C stops the wait (see :meth:`call_interruptibly`).
        """
        req = pb.DispatchGetRequest(
            dispatch_id=dispatch_id, include_output=include_output, wait_s=wait_s
        )
        if interruptible:
            return cast(pb.DispatchGetResponse, self.call_interruptibly(self.stub.DispatchGet, req))
        return cast(pb.DispatchGetResponse, self.call(self.stub.DispatchGet, req))

    def dispatch_cancel(
        self, dispatch_id: str, task_ids: list[int] | None = None
    ) -> pb.DispatchCancelResponse:
        """Cancels the dispatch, or only ``task_ids`` (node ids) of it."""
        req = pb.DispatchCancelRequest(dispatch_id=dispatch_id, task_ids=task_ids or [])
        return cast(pb.DispatchCancelResponse, self.call(self.stub.DispatchCancel, req))

    def task_list(
        self, dispatch_id: str, *, include_parameters: bool = False
    ) -> list[pb.TaskRecord]:
        """Every task of a dispatch (and parameter node, when asked), with its logs,
        in node order."""
        req = pb.TaskListRequest(
            dispatch_id=dispatch_id, include_logs=True, include_parameters=include_parameters
        )
        return list(cast(pb.TaskListResponse, self.call(self.stub.TaskList, req)).tasks)

    def node_get(
        self, dispatch_id: str, node_id: int, *, include_output: bool = True
    ) -> tuple[pb.TaskRecord, bytes | None]:
        """One node's record and its pickled output (None when it has none, or
        when ``include_output`` is False)."""
        req = pb.NodeGetRequest(
            dispatch_id=dispatch_id, node_id=node_id, include_output=include_output
        )
        resp = cast(pb.NodeGetResponse, self.call(self.stub.NodeGet, req))
        output = self.fetch_payload(resp.output) if resp.output.sha256 else None
        return resp.task, output

    def fetch_payload(self, payload: pb.Payload) -> bytes:
        """A payload's bytes: inline in the message, else streamed from the blob store."""
        if payload.data:
            return payload.data
        chunks = self.stream(self.stub.BlobGet, pb.BlobGetRequest(sha256=payload.sha256))
        return b"".join(c.data for c in chunks)

    def fetch_sha256(self, sha256: str) -> bytes:
        """A stored payload's bytes, by its sha256."""
        return self.fetch_payload(pb.Payload(sha256=sha256))

    def upload(self, payloads: Mapping[str, bytes]) -> None:
        """Puts the payloads the blob store lacks, in chunks of 1 MiB, by their sha256."""
        if not payloads:
            return
        has = self.call(self.stub.BlobHas, pb.BlobHasRequest(sha256=list(payloads)))
        for sha in has.missing:
            data = payloads[sha]

            def chunks(sha: str = sha, data: bytes = data) -> Iterator[pb.BlobChunk]:
                for start in range(0, max(len(data), 1), _CHUNK):
                    yield pb.BlobChunk(sha256=sha, data=data[start : start + _CHUNK])

            self.call(self.stub.BlobPut, chunks())


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
        info = start_controller(home, announce=True)
    from_environment = bool(os.environ.get("COBALT_CONTROLLER_ADDRESS"))
    return _client_for(info, None if from_environment else home)


def _client_for(info: ControllerInfo, home: Path | None) -> Client:
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
            client = _clients[key] = Client(info, home)
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
