"""Serving the dashboard from inside the controller process.

uvicorn runs in a daemon thread with its own event loop. It installs no
signal handlers there (the controller's main thread owns SIGTERM and SIGINT)
and leaves the controller's logging configuration alone.

It parses with httptools (llhttp), not h11: under malformed input h11 let a
request with a broken body reach the app while uvicorn had already answered
400, and the app's own answer then raised ``LocalProtocolError`` with a
traceback in the log; h11 also took a request with both ``Content-Length``
and ``Transfer-Encoding``, which llhttp refuses. A malformed request now gets
400 and one warning line; a request head over 64 KiB gets 431
(:mod:`._http`). At most :data:`MAX_CONNECTIONS` connections are
served at once; more are answered 503.
"""

from __future__ import annotations

import socket
import threading
import time
from typing import TYPE_CHECKING

import uvicorn

from cobalt_common.errors import ConfigError
from cobalt_controller.dashboard._app import build_app
from cobalt_controller.dashboard._auth import cookie_name
from cobalt_controller.dashboard._deployments import LiveReader, no_live
from cobalt_controller.dashboard._http import BoundedHeadProtocol
from cobalt_controller.dashboard._live import LiveFeed

if TYPE_CHECKING:
    from cobalt_controller.dispatch._model import Dispatch, Task
    from cobalt_controller.state import StateStore

START_TIMEOUT_S = 10.0
MAX_CONNECTIONS = 256
"""Connections and requests served at once; a page holds one for its live feed."""
_ANY_HOST = {"", "0.0.0.0", "::"}


def split_address(address: str) -> tuple[str, int]:
    """``"127.0.0.1:0"`` as ``("127.0.0.1", 0)``; ``"[::1]:8080"`` as ``("::1", 8080)``."""
    host, sep, port = address.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        raise ConfigError(
            f"[controller] dashboard_address {address!r} is not host:port; "
            'write for example "127.0.0.1:8265" (port 0 picks a free one), or "" to turn '
            "the dashboard off."
        )
    return host.strip("[]"), int(port)


class Dashboard:
    """The web dashboard of one controller: ``start()``, then ``url``, then ``stop()``.

    Args:
        state: the controller's state store, read only.
        token: the controller's token; every request must carry it.
        address: ``host:port`` to listen on; port 0 picks a free one.
        deployments: reads the deployment manager's live state (replicas ready,
            requests in flight, cost accrued, the gateway's address), read only;
            see :func:`cobalt_controller.dashboard.deployments_reader`. Without
            it the deployment pages show what the store holds.
    """

    def __init__(
        self,
        state: StateStore,
        token: str,
        address: str,
        *,
        deployments: LiveReader | None = None,
    ) -> None:
        self.state = state
        self.token = token
        self.deployments = deployments or no_live
        self.host, self.port = split_address(address)
        self.feed = LiveFeed(state)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    def notify(self, dispatch: Dispatch, task: Task | None) -> None:
        """The scheduler's listener: records a committed change for open pages."""
        self.feed.notify(dispatch, task)

    def notify_deployment(self, name: str) -> None:
        """The deployment manager's listener: records that a deployment changed."""
        self.feed.notify_deployment(name)

    @property
    def url(self) -> str:
        """Where a browser finds the dashboard (without the token)."""
        host = socket.gethostname() if self.host in _ANY_HOST else self.host
        if ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.port}/"

    def start(self) -> None:
        sock = self._bind()
        self.port = sock.getsockname()[1]
        app = build_app(
            self.state,
            self.feed,
            token=self.token,
            cookie=cookie_name(self.port),
            live=self.deployments,
        )
        config = uvicorn.Config(
            app,
            host=self.host,
            port=self.port,
            loop="asyncio",
            http=BoundedHeadProtocol,
            limit_concurrency=MAX_CONNECTIONS,
            ws="none",
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            server_header=False,
            timeout_graceful_shutdown=1,
        )
        self._server = server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="cobalt-dashboard", daemon=True
        )
        self.feed.start()
        self._thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise ConfigError(
                    f"the dashboard could not start on {self.host}:{self.port}; see the "
                    'controller log, or set [controller] dashboard_address = "" to run '
                    "without it."
                )
            time.sleep(0.01)

    def _bind(self) -> socket.socket:
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((self.host or "0.0.0.0", self.port))
        except OSError as exc:
            sock.close()
            raise ConfigError(
                f"the dashboard cannot listen on {self.host}:{self.port} ({exc.strerror}); "
                "set [controller] dashboard_address to a free host:port (port 0 picks one), "
                'or to "" to run without the dashboard.'
            ) from exc
        sock.listen(128)
        sock.set_inheritable(False)
        return sock

    def stop(self) -> None:
        """Closes open pages' streams and stops serving; waits a few seconds at most."""
        self.feed.stop()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
