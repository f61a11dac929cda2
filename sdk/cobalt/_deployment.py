"""The handle of a deployment: call its endpoints, watch it, tear it down.

``dep.predict(text="hi")`` posts ``{"text": "hi"}`` to the ``/predict``
route (one method per endpoint, named after its function), ``await
dep.async_predict(...)`` does the same without blocking, and streaming
routes return iterators. The handle pickles as plain data (name, URL,
token, routes), so a task can return one and a notebook can use it; its
HTTP clients are made again when first needed. Used as a context manager
(``with ct.deploy(svc)() as dep:``), it tears the deployment down when the
block ends.

Example:
    >>> from cobalt_common.deploy import Route
    >>> dep = Deployment("echo", "http://127.0.0.1:8900/echo", (Route("say", "/say"),), token=None)
    >>> dep.routes, dep.auth
    (['/say'], False)
"""

from __future__ import annotations

import asyncio
import functools
import json
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

import httpx
from pydantic_core import to_jsonable_python

from cobalt import _html as h
from cobalt import _http
from cobalt._client import Client, get_client
from cobalt._deployment_metrics import DeploymentMetrics
from cobalt_common.deploy import Route
from cobalt_common.errors import EndpointError, SpecError
from cobalt_common.v1 import controller_pb2 as pb

STATUS_NAMES = {
    pb.DEPLOYMENT_STATUS_UNSPECIFIED: "starting",
    pb.DEPLOYMENT_STATUS_STARTING: "starting",
    pb.DEPLOYMENT_STATUS_ACTIVE: "active",
    pb.DEPLOYMENT_STATUS_FAILED: "failed",
    pb.DEPLOYMENT_STATUS_STOPPED: "stopped",
}


@dataclass(frozen=True, slots=True)
class DeploymentEvent:
    """One recorded event: a scaling decision, a replica started or failed...

    Attributes:
        time: when, as a unix timestamp.
        kind: ``scale_up``, ``scale_down``, ``replica_started``, ``replica_failed``, ...
        message: the decision and its reason in words.
        inputs: the metrics and settings it was made from.
    """

    time: float
    kind: str
    message: str
    inputs: dict[str, Any]


def _body(values: dict[str, Any]) -> bytes:
    return json.dumps(values, separators=(",", ":"), default=to_jsonable_python).encode()


class Deployment:
    """A deployed service, as seen from a client.

    Attributes:
        name: the deployment's name.
        url: ``<gateway>/<name>``; routes are ``POST <url><path>``.
        token: the bearer token callers send, or ``None`` when auth is off.
        auth: whether callers need the token.
    """

    def __init__(
        self,
        name: str,
        url: str,
        routes: Sequence[Route],
        token: str | None,
        *,
        status: str = "starting",
        ready_replicas: int = 0,
        params: Sequence[str] | None = None,
    ) -> None:
        self.name = name
        self.url = url.rstrip("/")
        self._routes = tuple(routes)
        self.token = token or None
        self._status = status
        self._ready = ready_replicas
        self._error = ""
        self._cost = (0.0, False)
        self._params = tuple(params) if params is not None else None
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        # The controller it was read from (followed if it restarts), asked by refresh(),
        # teardown()...; None (made by hand, or unpickled in a task) asks the current one.
        self._controller: Client | None = None
        self._aclient: tuple[asyncio.AbstractEventLoop, httpx.AsyncClient] | None = None

    @classmethod
    def from_pb(
        cls,
        msg: pb.Deployment,
        params: Sequence[str] | None = None,
        controller: Client | None = None,
    ) -> Deployment:
        """The handle of ``msg``, as ``controller`` (which it keeps asking) described it."""
        routes = [Route(r.name, r.path, r.streaming) for r in msg.routes]
        dep = cls(msg.name, msg.url, routes, msg.token or None, params=params)
        dep._controller = controller
        dep._update(msg)
        return dep

    def _update(self, msg: pb.Deployment) -> None:
        self._status = STATUS_NAMES.get(msg.status, "starting")
        self._ready = msg.ready_replicas
        self._error = msg.error
        self._cost = (msg.cost_usd, msg.emulated)
        self.token = msg.token or None
        if msg.url:
            self.url = msg.url.rstrip("/")
        if msg.routes:
            self._routes = tuple(Route(r.name, r.path, r.streaming) for r in msg.routes)

    # ---- pickling: plain data only -------------------------------------------------

    def __getstate__(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "url": self.url,
            "routes": [(r.name, r.path, r.streaming) for r in self._routes],
            "token": self.token,
            "status": self._status,
            "params": self._params,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        routes = [Route(*r) for r in state["routes"]]
        self.__init__(  # type: ignore[misc]
            state["name"],
            state["url"],
            routes,
            state["token"],
            status=state.get("status", "starting"),
            params=state.get("params"),
        )

    # ---- what the controller knows ----------------------------------------------------

    @property
    def auth(self) -> bool:
        """Whether callers need :attr:`token`."""
        return self.token is not None

    @property
    def routes(self) -> list[str]:
        """The route paths, such as ``["/predict", "/stream"]``."""
        return [r.path for r in self._routes]

    @property
    def endpoints(self) -> list[Route]:
        """The routes with their names (the method names) and whether they stream."""
        return list(self._routes)

    @property
    def status(self) -> str:
        """``"starting"``, ``"active"``, ``"failed"`` or ``"stopped"``, asked of the controller."""
        return self.refresh()._status

    @property
    def replicas(self) -> int:
        """How many replicas are ready now, asked of the controller."""
        return self.refresh()._ready

    @property
    def cost_usd(self) -> float:
        """What its replicas have cost so far (billed per started second), asked of the
        controller; see :attr:`cost_emulated`."""
        return self.refresh()._cost[0]

    @property
    def cost_emulated(self) -> bool:
        """Whether some of :attr:`cost_usd` is for emulated GPUs, priced as the real ones."""
        return self._cost[1]

    @property
    def error(self) -> str:
        """Why it failed (the replica's traceback), or ""."""
        return self._error

    def refresh(self) -> Deployment:
        """Read the deployment's state from the controller; returns ``self``."""
        self._update(self._rpc("DeploymentGet", pb.DeploymentGetRequest(name=self.name)))
        return self

    def teardown(self) -> None:
        """Stop every replica; the URL answers 404 afterwards."""
        self._update(self._rpc("DeploymentTeardown", pb.DeploymentGetRequest(name=self.name)))

    def __enter__(self) -> Deployment:
        """``with ct.deploy(svc)() as dep:`` tears the deployment down when the block ends."""
        return self

    def __exit__(self, *exc_info: object) -> None:
        """Tear down (even when the block raised), then close the HTTP connections."""
        try:
            self.teardown()
        finally:
            self.close()

    def rotate_token(self) -> str:
        """Replace the token (the old one stops working at once); returns the new one."""
        msg = self._rpc("DeploymentTokenRotate", pb.DeploymentGetRequest(name=self.name))
        self._update(msg)
        return str(msg.token)

    def events(self, limit: int = 50) -> list[DeploymentEvent]:
        """The latest events, newest first: scaling decisions with their inputs, replica starts."""
        req = pb.DeploymentEventsRequest(name=self.name, limit=limit)
        resp = cast(pb.DeploymentEventsResponse, self._rpc("DeploymentEvents", req))
        return [
            DeploymentEvent(e.time, e.kind, e.message, json.loads(e.inputs_json or "{}"))
            for e in resp.events
        ]

    def logs(self, tail_bytes: int = 64 * 1024) -> str:
        """What the replicas printed: live ones first, then recently ended ones.

        An endpoint that raised logged its traceback here under the error id
        its 500 answer carried (``EndpointError.error_id``).
        """
        req = pb.DeploymentLogsRequest(name=self.name, tail_bytes=tail_bytes)
        resp = cast(pb.DeploymentLogsResponse, self._rpc("DeploymentLogs", req))
        return format_logs(resp.replicas)

    def metrics(self) -> DeploymentMetrics:
        """Requests, latencies, tokens per second, batch sizes and cost per unit, asked of
        the controller; see :class:`~cobalt.DeploymentMetrics`.

        The controller reads the ready replicas when asked (waiting up to a
        second for them), so requests that were just answered are counted.
        """
        msg = self._rpc("DeploymentMetrics", pb.DeploymentGetRequest(name=self.name))
        return DeploymentMetrics.from_pb(msg)

    def _rpc(self, method: str, request: Any) -> Any:
        client = self._controller.current() if self._controller is not None else get_client()
        return client.call(getattr(client.stub, method), request, timeout=60)

    # ---- calling endpoints -----------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI description the deployment serves at ``<url>/openapi.json``."""
        where = f"{self.name}/openapi.json"
        response = self._sync().get(f"{self.url}/openapi.json", headers=self._headers())
        return cast(dict[str, Any], _http.check(response, where).json())

    def call(self, path: str, /, **body: Any) -> Any:
        """Call the route at ``path`` with ``body`` as its JSON fields.

        A streaming route returns an iterator of the values it sends.
        """
        route = self._by_path(path)
        if route is not None and route.streaming:
            return self._stream(path, body)
        return self._post(path, body)

    def acall(self, path: str, /, **body: Any) -> Any:
        """:meth:`call` without blocking: a coroutine to await, or for a streaming
        route an async iterator (``async for value in dep.acall("/stream", ...)``)."""
        route = self._by_path(path)
        if route is not None and route.streaming:
            return self._astream(path, body)
        return self._apost(path, body)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """Call the only endpoint (positional arguments map to its parameters in order)."""
        if len(self._routes) != 1:
            names = ", ".join(f"dep.{r.name}(...)" for r in self._routes)
            raise SpecError(
                f"deployment {self.name!r} has {len(self._routes)} endpoints; call one by name: "
                f"{names}."
            )
        route = self._routes[0]
        if args:
            params = self._parameters()
            if len(args) > len(params):
                raise SpecError(
                    f"{route.name} takes at most {len(params)} positional argument(s) "
                    f"({', '.join(params)}), got {len(args)}."
                )
            for name, value in zip(params, args, strict=False):
                if name in kwargs:
                    raise SpecError(f"{route.name} got {name!r} twice.")
                kwargs[name] = value
        return self.call(route.path, **kwargs)

    def _parameters(self) -> tuple[str, ...]:
        if self._params is None:
            path = self._routes[0].path
            op = self.openapi().get("paths", {}).get(path, {}).get("post", {})
            schema = op.get("requestBody", {}).get("content", {}).get("application/json", {})
            self._params = tuple(schema.get("schema", {}).get("properties", {}))
        return self._params

    def _by_path(self, path: str) -> Route | None:
        return next((r for r in self._routes if r.path == path), None)

    def _by_name(self, name: str) -> Route | None:
        return next((r for r in self.__dict__.get("_routes", ()) if r.name == name), None)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        route = self._by_name(name)
        if route is not None:
            method: Callable[..., Any] = functools.partial(self.call, route.path)
            return method
        if name.startswith("async_") and (route := self._by_name(name[6:])) is not None:
            return functools.partial(self.acall, route.path)
        names = ", ".join(r.name for r in self.__dict__.get("_routes", ())) or "none"
        raise AttributeError(
            f"deployment {self.__dict__.get('name')!r} has no endpoint {name!r}; its endpoints "
            f"are {names} (dep.call('/path', ...) calls any route)."
        )

    def __dir__(self) -> list[str]:
        names = [r.name for r in self._routes] + [f"async_{r.name}" for r in self._routes]
        return sorted({*super().__dir__(), *names})

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.token:
            headers["authorization"] = f"Bearer {self.token}"
        return headers

    def _sync(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                self._client = _http.sync_client()
            return self._client

    def _async(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._aclient is None or self._aclient[0] is not loop:
            self._aclient = (loop, _http.async_client())
        return self._aclient[1]

    def _post(self, path: str, body: dict[str, Any]) -> Any:
        url, where = f"{self.url}{path}", f"{self.name}{path}"
        response = self._sync().post(url, content=_body(body), headers=self._headers())
        return _http.check(response, where).json()

    async def _apost(self, path: str, body: dict[str, Any]) -> Any:
        url, where = f"{self.url}{path}", f"{self.name}{path}"
        response = await self._async().post(url, content=_body(body), headers=self._headers())
        return _http.check(response, where).json()

    def _stream(self, path: str, body: dict[str, Any]) -> Iterator[Any]:
        url, where = f"{self.url}{path}", f"{self.name}{path}"
        request = self._sync().build_request(
            "POST", url, content=_body(body), headers=self._headers()
        )
        response = self._sync().send(request, stream=True)
        try:
            if response.status_code >= 400:
                response.read()
                _http.check(response, where)
            for event, data in _http.parse_sse(response.iter_lines()):
                done, value = _http.sse_value(event, data, where)
                if done:
                    return
                yield value
            raise EndpointError(f"{where}: the stream ended without its end event", status_code=502)
        finally:
            response.close()

    async def _astream(self, path: str, body: dict[str, Any]) -> AsyncIterator[Any]:
        url, where = f"{self.url}{path}", f"{self.name}{path}"
        client = self._async()
        request = client.build_request("POST", url, content=_body(body), headers=self._headers())
        response = await client.send(request, stream=True)
        try:
            if response.status_code >= 400:
                await response.aread()
                _http.check(response, where)
            async for event, data in _http.aparse_sse(response.aiter_lines()):
                done, value = _http.sse_value(event, data, where)
                if done:
                    return
                yield value
            raise EndpointError(f"{where}: the stream ended without its end event", status_code=502)
        finally:
            await response.aclose()

    def close(self) -> None:
        """Close the HTTP connections (they are opened again when needed)."""
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            client.close()

    # ---- display -----------------------------------------------------------------------

    def _fresh(self) -> Deployment:
        try:
            return self.refresh()
        except Exception:  # shown from what was last known
            return self

    def __repr__(self) -> str:
        self._fresh()
        auth = "" if self.auth else ", open (no auth)"
        routes = " ".join(self.routes)
        plural = "" if self._ready == 1 else "s"
        return (
            f"<deployment {self.name}: {self._status}, {self._ready} replica{plural} ready, "
            f"{self.url}, routes {routes}{auth}>"
        )

    def _repr_html_(self) -> str:
        self._fresh()
        auth = "bearer token (dep.token)" if self.auth else "<b>open (no auth)</b>"
        routes = "<br>".join(
            f"<code>{'/'.join(r.methods)} {h.esc(r.path)}</code>"
            + (f" → <code>dep.{h.esc(r.name)}(...)</code>" if "POST" in r.methods else "")
            + (" (stream)" if r.streaming else "")
            for r in self._routes
        )
        rows = [
            ["status", h.badge(self._status.upper())],
            ["url", f"<code>{h.esc(self.url)}</code>"],
            ["routes", routes],
            ["replicas ready", h.esc(self._ready)],
            ["auth", auth],
        ]
        if self._error and self._status == "failed":
            rows.append(["error", h.pre(self._error)])
        return f"<div><b>deployment {h.esc(self.name)}</b>{h.table(['', ''], rows)}</div>"


def format_logs(replicas: Iterable[pb.ReplicaLog]) -> str:
    """Replica logs as text, one section per replica and stream."""
    parts = []
    for r in replicas:
        parts.append(f"=== replica {r.replica_id} ({r.status}) ===")
        for stream, text in (("stdout", r.stdout), ("stderr", r.stderr)):
            if text.strip():
                parts.append(f"--- {stream} ---\n{text.rstrip()}")
    return "\n".join(parts) if parts else "no replica has printed anything yet"
