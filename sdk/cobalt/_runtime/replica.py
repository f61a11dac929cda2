"""What a replica runs: the service's initializer once, then its HTTP server.

The controller starts a replica as a long-running task whose function is a
pickled :class:`ReplicaEntry`. The entry runs the initializer, binds a port,
tells the controller where it listens (``ReplicaReady``) and serves with
uvicorn until SIGTERM, SIGINT or ``POST /_cobalt/shutdown``; then it returns
``None``. If the initializer raises, the exception propagates: the task
fails with the traceback, which is how the controller learns that the
replica could not start.

The environment tells it who it is (set by the controller):
``COBALT_DEPLOYMENT``, ``COBALT_REPLICA_ID``, ``COBALT_DEPLOYMENT_VERSION``,
``COBALT_REPLICA_HOST``, ``COBALT_REPLICA_SECRET``, and
``COBALT_CONTROLLER_ADDRESS`` / ``COBALT_CONTROLLER_TOKEN`` to reach it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import threading
from collections.abc import Generator, Mapping
from typing import Any

import uvicorn

from cobalt._client import get_client
from cobalt._runtime.replica_app import ReplicaApp
from cobalt._service import Service
from cobalt_common.errors import DeploymentError
from cobalt_common.v1 import controller_pb2 as pb

_BACKLOG = 2048


def _float_env(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, "") or default)
    except ValueError:
        return default


class ReplicaEntry:
    """The function of a replica's task: ``entry(*init_args, **init_kwargs)`` serves.

    Args:
        service: the service to serve.
    """

    __slots__ = ("service",)

    def __init__(self, service: Service[...]) -> None:
        self.service = service

    def __call__(self, *args: Any, **kwargs: Any) -> None:
        values = self.initialize(args, kwargs)
        app = self.build_app(values)
        host = os.environ.get("COBALT_REPLICA_HOST") or "127.0.0.1"
        sock = bind(host)
        try:
            if not self.report_ready(sock, app):
                return None
            serve(app, sock)
        finally:
            app.close()
            sock.close()
        return None

    def initialize(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Mapping[str, Any]:
        """Run the initializer; its result must be a dict with string keys."""
        values = self.service.initializer(*args, **kwargs)
        if values is None:
            values = {}
        if not isinstance(values, Mapping) or not all(isinstance(k, str) for k in values):
            raise DeploymentError(
                f"the initializer of service {self.service.name!r} returned a "
                f"{type(values).__name__}; it must return a dict such as {{'model': model}}, "
                "whose values endpoints receive by parameter name.",
                name=self.service.name,
            )
        return values

    def build_app(self, values: Mapping[str, Any]) -> ReplicaApp:
        """The ASGI app for this replica, configured from the environment."""
        hardware_cpus = self.service.hardware().cpus or 1.0
        return ReplicaApp(
            self.service,
            values,
            deployment=os.environ.get("COBALT_DEPLOYMENT", self.service.name),
            replica_id=os.environ.get("COBALT_REPLICA_ID", ""),
            version=int(_float_env("COBALT_DEPLOYMENT_VERSION", 0)),
            secret=os.environ.get("COBALT_REPLICA_SECRET") or None,
            cpus=_float_env("COBALT_CPUS", hardware_cpus),
        )

    def report_ready(self, sock: socket.socket, app: ReplicaApp) -> bool:
        """Tell the controller where this replica listens; False: it is no longer wanted."""
        deployment = os.environ.get("COBALT_DEPLOYMENT")
        if not deployment:
            return True  # run by hand, outside a controller
        host, port = sock.getsockname()[:2]
        if host in ("0.0.0.0", "::"):  # listening everywhere: say where it is reached
            host = os.environ.get("COBALT_REPLICA_ADVERTISE") or socket.gethostname()
        url = f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
        request = pb.ReplicaReadyRequest(
            deployment=deployment,
            replica_id=os.environ.get("COBALT_REPLICA_ID", ""),
            url=url,
            pid=os.getpid(),
            openapi_json=json.dumps(app.openapi()),
        )
        client = get_client()
        return bool(client.call(client.stub.ReplicaReady, request, timeout=60).keep)

    def __repr__(self) -> str:
        return f"ReplicaEntry({self.service!r})"


def bind(host: str, port: int = 0) -> socket.socket:
    """A listening TCP socket on ``host`` (an ephemeral port by default)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(_BACKLOG)
    sock.set_inheritable(True)
    return sock


def serve(app: ReplicaApp, sock: socket.socket) -> None:
    """Serve ``app`` on ``sock`` until a signal or a shutdown request; then return."""
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        app,
        loop=loop,
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        log_config=None,
        timeout_keep_alive=75,
        backlog=_BACKLOG,
    )
    server = _Server(config)
    app.on_shutdown = lambda: setattr(server, "should_exit", True)
    server.run(sockets=[sock])


class _Server(uvicorn.Server):
    """uvicorn's server, whose signal handling stops it without re-raising the signal.

    uvicorn re-raises SIGTERM once it stopped, which would end the worker
    process; a replica returns instead, so that its task ends normally.
    """

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = {s: signal.signal(s, self.handle_exit) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
