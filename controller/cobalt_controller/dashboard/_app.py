"""The dashboard's routes: five pages, their JSON, and a stream of changes.

Pages (one HTML shell; the browser renders from the JSON):

- ``/``: dispatches, with status, duration, cost and tasks counted by status;
- ``/dispatches/{id}``: the workflow graph, the task table and each task's logs;
- ``/deployments``: deployments, with status, replicas, auth, routes and cost;
- ``/deployments/{name}``: one deployment, its replicas and its event log;
- ``/cost``: spend by day, by executor and by GPU type.

JSON under ``/api/``, and ``/api/events`` streams changes as Server-Sent
Events. Every route reads; none writes (see :mod:`._auth`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import re
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable
from html import escape
from pathlib import Path
from typing import Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp

from cobalt_controller.dashboard import _deployments, _graph, _views
from cobalt_controller.dashboard._auth import TokenGate
from cobalt_controller.dashboard._deployments import LiveReader, no_live
from cobalt_controller.dashboard._live import ALL, LiveFeed, deployment_key
from cobalt_controller.state import NodeRow, StateStore

STATIC = Path(__file__).with_name("static")
KEEPALIVE_S = 15.0
NO_STORE = {"Cache-Control": "no-store"}
CACHED = 16
"""Dispatches whose graph, and once ended whose whole view, are kept in memory."""
CACHED_BYTES = 64 << 20
"""At most this much text of ended dispatches' views is kept."""


class _Static:
    """The page's scripts and styles, read once and served from memory.

    They are a few small files; serving them without a file read or a thread
    hop per request keeps a page's first load quick. The browser revalidates
    with the ETag before reusing one.
    """

    TYPES = {".js": "text/javascript", ".css": "text/css", ".html": "text/html"}

    def __init__(self, directory: Path) -> None:
        self.files: dict[str, tuple[bytes, str, str]] = {}
        for path in sorted(directory.iterdir()):
            if path.suffix in self.TYPES:
                body = path.read_bytes()
                etag = '"' + hashlib.sha256(body).hexdigest()[:16] + '"'
                self.files[path.name] = (body, f"{self.TYPES[path.suffix]}; charset=utf-8", etag)

    async def serve(self, request: Request) -> Response:
        found = self.files.get(request.path_params["name"])
        if found is None:
            return Response("Not found.\n", status_code=404, media_type="text/plain")
        body, media_type, etag = found
        headers = {"ETag": etag, "Cache-Control": "no-cache"}
        if request.headers.get("if-none-match") == etag:
            return Response(status_code=304, headers=headers)
        return Response(body, media_type=media_type, headers=headers)


def _json(data: Any, status_code: int = 200) -> JSONResponse:
    return JSONResponse(data, status_code=status_code, headers=NO_STORE)


MAX_NODE_ID = 2**63 - 1
_DIGITS = re.compile(r"[0-9]{1,19}")


def _node_id(text: str) -> int | None:
    """A node id from a URL, or ``None`` when it names no node: a store keeps
    node ids as 64-bit integers, and ``int()`` of a long digit string raises."""
    if not _DIGITS.fullmatch(text):
        return None
    value = int(text)
    return value if value <= MAX_NODE_ID else None


def _int(value: str | None, default: int, low: int, high: int) -> int:
    try:
        return min(max(int(value or default), low), high)
    except ValueError:
        return default


def _since(value: str | None) -> float | None:
    try:
        return float(value) if value else None
    except ValueError:
        return None


class _Api:
    """The JSON endpoints; plain functions, so Starlette runs them off the event loop."""

    def __init__(self, state: StateStore, live: LiveReader = no_live) -> None:
        self.state = state
        self.live = live
        self._graphs: OrderedDict[tuple[str, int], dict[str, Any]] = OrderedDict()
        self._ended: OrderedDict[str, str] = OrderedDict()
        self._lock = threading.Lock()

    def _graph(self, dispatch_id: str, nodes: list[NodeRow]) -> dict[str, Any]:
        """The laid-out graph; kept for recent dispatches, whose shape never changes."""
        key = (dispatch_id, len(nodes))
        with self._lock:
            graph = self._graphs.get(key)
            if graph is not None:
                self._graphs.move_to_end(key)
                return graph
        graph = _graph.build(nodes)
        with self._lock:
            self._graphs[key] = graph
            while len(self._graphs) > CACHED:
                self._graphs.popitem(last=False)
        return graph

    def dispatches(self, request: Request) -> Response:
        limit = _int(request.query_params.get("limit"), 100, 1, 1000)
        as_of = time.time()
        rows = self.state.list_dispatches(limit)
        counts = self.state.status_counts([r.dispatch_id for r in rows])
        return _json({"as_of": as_of, "dispatches": _views.dispatches(rows, counts)})

    def dispatch(self, request: Request) -> Response:
        dispatch_id = request.path_params["dispatch_id"]
        as_of = time.time()
        view = self._view(dispatch_id, as_of)
        if view is None:
            return _not_found(
                f"No dispatch {dispatch_id!r} on this controller; "
                "`cobalt dispatches` lists the ones it has."
            )
        # ``view`` is a JSON object's text; the read time goes in front of its fields.
        body = f'{{"as_of":{as_of!r},{view[1:]}'
        return Response(body, media_type="application/json", headers=NO_STORE)

    def _view(self, dispatch_id: str, as_of: float) -> str | None:
        """A dispatch, its tasks and its graph as JSON text; ``None`` if there is none.

        The store commits a dispatch's end together with its tasks' last changes,
        so the view of an ended dispatch never changes: it is kept and reused.
        """
        with self._lock:
            kept = self._ended.get(dispatch_id)
        if kept is not None:
            return kept
        row = self.state.get_dispatch(dispatch_id)
        if row is None:
            return None
        nodes = self.state.get_nodes(dispatch_id, include_logs=False)
        view = json.dumps(
            {
                "dispatch": _views.dispatch(row, _views.count_statuses(nodes), as_of),
                "tasks": _views.tasks(nodes, as_of),
                "graph": self._graph(dispatch_id, nodes),
            },
            separators=(",", ":"),
            allow_nan=False,
        )
        if row.status in _views.ENDED and len(view) <= CACHED_BYTES // 4:
            with self._lock:
                self._ended[dispatch_id] = view
                size = sum(len(v) for v in self._ended.values())
                while len(self._ended) > CACHED or size > CACHED_BYTES:
                    size -= len(self._ended.popitem(last=False)[1])
        return view

    def task(self, request: Request) -> Response:
        dispatch_id = request.path_params["dispatch_id"]
        node_id = _node_id(request.path_params["node_id"])
        node = self.state.get_node(dispatch_id, node_id) if node_id is not None else None
        if node is None or node.kind not in _views.TASK_KINDS:
            return _not_found(
                f"Dispatch {dispatch_id!r} has no task {request.path_params['node_id'][:40]!r}; "
                "its page lists its tasks."
            )
        return _json(_views.task_detail(node))

    def cost(self, request: Request) -> Response:
        days = _int(request.query_params.get("days"), 30, 0, 100_000)
        since = (dt.date.today() - dt.timedelta(days=days - 1)).isoformat() if days else ""
        as_of = time.time()
        return _json({"as_of": as_of, **_views.cost(self.state.cost_summary(since), since)})

    def deployments(self, request: Request) -> Response:
        include_stopped = request.query_params.get("all", "") not in ("", "0")
        as_of = time.time()
        snapshot = self.live()
        views = [
            _deployments.deployment(
                row,
                self.state.get_replicas(row.name, live_only=True),
                snapshot.deployments.get(row.name),
                snapshot.gateway_url,
            )
            for row in self.state.list_deployments(include_stopped=include_stopped)
        ]
        return _json({"as_of": as_of, "deployments": views})

    def deployment(self, request: Request) -> Response:
        name = request.path_params["name"]
        limit = _int(request.query_params.get("limit"), 100, 1, 1000)
        as_of = time.time()
        row = self.state.get_deployment(name)
        if row is None:
            return _not_found(
                f"No deployment {name!r} on this controller; "
                "`cobalt deployments list --all` lists the ones it has."
            )
        view = _deployments.detail(
            row,
            self.state.get_replicas(name),
            self.state.deployment_events(name, limit),
            self.live(),
        )
        return _json({"as_of": as_of, **view})


def _not_found(message: str) -> JSONResponse:
    return _json({"error": message}, 404)


def _events(feed: LiveFeed) -> Callable[[Request], Awaitable[Response]]:
    async def events(request: Request) -> Response:
        headers = {**NO_STORE, "X-Accel-Buffering": "no"}
        if request.method == "HEAD":
            return Response(media_type="text/event-stream", headers=headers)
        deployment = request.query_params.get("deployment")
        if deployment is not None:
            key = deployment_key(deployment)
        else:
            key = request.query_params.get("dispatch") or ALL
        sub = feed.subscribe(key, _since(request.query_params.get("since")))

        async def stream() -> AsyncIterator[str]:
            try:
                yield "retry: 2000\n\n"
                while True:
                    try:
                        message = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                    except TimeoutError:
                        yield ": keep-alive\n\n"
                        continue
                    if message is None:
                        return
                    yield f"data: {message}\n\n"
            finally:
                feed.unsubscribe(sub)

        return StreamingResponse(stream(), media_type="text/event-stream", headers=headers)

    return events


def build_app(
    state: StateStore,
    feed: LiveFeed,
    *,
    token: str,
    cookie: str,
    live: LiveReader = no_live,
) -> ASGIApp:
    """The dashboard as an ASGI app, behind the token gate.

    ``live`` reads what only the deployment manager knows (see :mod:`._deployments`).
    """
    shell = (STATIC / "index.html").read_text()

    async def page(request: Request) -> Response:
        html = shell
        dispatch_id = request.path_params.get("dispatch_id")
        name = request.path_params.get("name")
        if dispatch_id is not None or name is not None:
            # The browser fetches the data while it loads the scripts, not after.
            api = escape(
                f"/api/dispatches/{quote(dispatch_id, safe='')}"
                if dispatch_id is not None
                else f"/api/deployments/{quote(name or '', safe='')}"
            )
            link = f'<link rel="preload" href="{api}" as="fetch" crossorigin>\n</head>'
            html = shell.replace("</head>", link, 1)
        return HTMLResponse(html, headers={"Cache-Control": "no-cache"})

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = "No such page; the dashboard starts at /." if status == 404 else str(exc)
        if request.url.path.startswith("/api/"):
            return _json({"error": message}, status)
        return Response(message + "\n", status_code=status, media_type="text/plain")

    api = _Api(state, live)
    app = Starlette(
        routes=[
            Route("/", page),
            Route("/dispatches/{dispatch_id}", page),
            Route("/deployments", page),
            Route("/deployments/{name}", page),
            Route("/cost", page),
            Route("/api/dispatches", api.dispatches),
            Route("/api/dispatches/{dispatch_id}", api.dispatch),
            Route("/api/dispatches/{dispatch_id}/tasks/{node_id}", api.task),
            Route("/api/deployments", api.deployments),
            Route("/api/deployments/{name}", api.deployment),
            Route("/api/cost", api.cost),
            Route("/api/events", _events(feed)),
            Route("/static/{name}", _Static(STATIC).serve),
        ],
        exception_handlers={HTTPException: http_error},
    )
    return TokenGate(app, token, cookie)
