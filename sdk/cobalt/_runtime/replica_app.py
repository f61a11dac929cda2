"""A replica's HTTP server: a lean ASGI app over a service's endpoints.

Only the gateway calls it. Routing is one dict lookup by path; bodies are
checked with each endpoint's pydantic model (:mod:`cobalt._runtime.validation`) and
answered with ``json``. Sync endpoints run in a bounded thread pool (as many
threads as the service's ``max_concurrency``), ``async def`` endpoints and
async generators on the event loop, sync generators one item at a time in
the pool. An endpoint that raises gets a 500 carrying an error id, its
traceback goes to stderr under that id, and the replica goes on serving.
Batched endpoints queue each checked request in their
:class:`~cobalt._runtime.batching.Batcher`, which calls them once per batch. Raw
routes (:mod:`cobalt._runtime.raw`, such as the OpenAI-compatible ones) are looked up
only when no endpoint matches, so ordinary requests pay nothing for them;
their handlers run on the event loop and make the whole answer, JSON or a
stream, with the status they choose.

Example:
    >>> import asyncio
    >>> from cobalt._service import service
    >>> @service(name="echo")
    ... def init() -> dict[str, str]:
    ...     return {"prefix": ">"}
    >>> @init.endpoint("/say")
    ... def say(prefix: str, text: str) -> str:
    ...     return prefix + text
    >>> app = ReplicaApp(init, init())
    >>> asyncio.run(app.handle_json("/say", b'{"text": "hi"}'))
    (200, b'">hi"')
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import hmac
import inspect
import json
import os
import secrets
import sys
import traceback
from collections.abc import AsyncGenerator, Awaitable, Callable, Iterator, Mapping, MutableMapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from pydantic_core import to_jsonable_python

from cobalt._runtime.batching import Answer, Batcher, BatchReturnError
from cobalt._runtime.metrics import UsageMeter
from cobalt._runtime.raw import RawHandler, RawRequest, send_raw, send_whole
from cobalt._runtime.validation import BadRequest, RequestBody, openapi_document
from cobalt_common.deploy import Batch, Route

if TYPE_CHECKING:
    from cobalt._service import Service

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_JSON = [(b"content-type", b"application/json")]
_SSE = [
    (b"content-type", b"text/event-stream"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
_END = object()
_TOO_LARGE = object()
_FRAMEWORK = (
    os.path.dirname(__file__),
    os.path.dirname(asyncio.__file__),
    os.path.dirname(concurrent.futures.__file__),
)


def dump(value: Any) -> bytes:
    """Compact JSON; values ``json`` does not know (models, dataclasses...) via pydantic."""
    return json.dumps(value, separators=(",", ":"), default=to_jsonable_python).encode()


def error_id() -> str:
    return secrets.token_hex(4)


def _user_traceback(exc: BaseException) -> str:
    """The traceback from the first frame that is not the replica's own (or the pool's)."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename.startswith(_FRAMEWORK):
        tb = tb.tb_next
    return "".join(traceback.format_exception(type(exc), exc, tb or exc.__traceback__))


class _Endpoint:
    __slots__ = ("batcher", "body", "function", "injected", "kind", "route")

    def __init__(self, route: Route, function: Callable[..., Any], values: Mapping[str, Any]):
        self.route = route
        self.function = function
        names = inspect.signature(function).parameters
        self.injected = {k: v for k, v in values.items() if k in names}
        self.body = RequestBody.of(function, self.injected, batched=route.batch is not None)
        self.batcher: Batcher | None = None
        if inspect.isasyncgenfunction(function):
            self.kind = "asyncgen"
        elif inspect.iscoroutinefunction(function):
            self.kind = "async"
        else:
            self.kind = "sync"


class _RawEndpoint:
    __slots__ = ("handler", "openapi", "route")

    def __init__(self, route: Route, handler: RawHandler, openapi: Mapping[str, Any] | None):
        self.route = route
        self.handler = handler
        self.openapi = openapi


class ReplicaApp:
    """The ASGI app of one replica.

    Args:
        service: the service whose endpoints it serves.
        values: what the initializer returned; injected into endpoints by name.
        deployment, replica_id, version: reported by ``/_cobalt/health``.
        secret: the ``x-cobalt-replica-secret`` every request must carry
            (``None``: not checked).
        cpus: the CPUs allotted, for ``/_cobalt/metrics``.
    """

    def __init__(
        self,
        service: Service[...],
        values: Mapping[str, Any],
        *,
        deployment: str = "",
        replica_id: str = "",
        version: int = 0,
        secret: str | None = None,
        cpus: float = 1.0,
    ) -> None:
        self.service = service
        self._values = values
        self._replica_id = replica_id
        self._routes = {
            e.route.path: _Endpoint(e.route, e.function, values)
            for e in service.endpoints
            if not e.route.raw
        }
        self._raw = {
            e.route.path: _RawEndpoint(e.route, e.function(values), e.openapi)
            for e in service.endpoints
            if e.route.raw
        }
        for endpoint in self._routes.values():
            if endpoint.route.batch is not None:
                endpoint.batcher = self._batcher(endpoint, endpoint.route.batch)
        self._secret = secret.encode() if secret else None
        self._max_body = service.max_body_bytes
        self._pool = ThreadPoolExecutor(
            max_workers=service.autoscaling.max_concurrency, thread_name_prefix="cobalt-endpoint"
        )
        self._health = dump(
            {
                "deployment": deployment or service.name,
                "replica_id": replica_id,
                "version": version,
                "pid": os.getpid(),
                "ready": True,
            }
        )
        self.meter = UsageMeter(cpus)
        self.in_flight = 0
        self.requests = 0
        self.on_shutdown: Callable[[], None] | None = None
        self._internal: dict[tuple[str, str], Callable[[bytes], Awaitable[tuple[int, bytes]]]] = {
            ("GET", "/_cobalt/health"): self._health_answer,
            ("GET", "/_cobalt/metrics"): self._metrics_answer,
            ("POST", "/_cobalt/policy"): self._policy_answer,
            ("POST", "/_cobalt/shutdown"): self._shutdown_answer,
            ("GET", "/_cobalt/logs"): self._logs_answer,
        }

    def openapi(self) -> dict[str, Any]:
        """The OpenAPI 3.1 description of the service's routes."""
        endpoints = [(e.route, e.function, e.body) for e in self._routes.values()]
        raw = [(e.route, e.openapi) for e in self._raw.values() if e.openapi is not None]
        return openapi_document(self.service.name, "1", endpoints, auth=self.service.auth, raw=raw)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await _lifespan(receive, send)
            return
        given = None
        request_id = ""
        for key, value in scope["headers"]:
            if key == b"x-cobalt-replica-secret":
                given = value
            elif key == b"x-request-id":
                request_id = value.decode("latin-1")
        if self._secret is not None and (
            given is None or not hmac.compare_digest(given, self._secret)
        ):
            await _answer(
                send, 403, {"error": "this replica answers only its deployment's gateway."}
            )
            return
        path, method = scope["path"], scope["method"]
        endpoint = self._routes.get(path)
        if endpoint is None:
            raw = self._raw.get(path)
            if raw is not None:
                await self._serve_raw(raw, method, receive, send, request_id)
                return
            internal = self._internal.get((method, path))
            if internal is None:
                await self._unrouted(send, method, path)
                return
            body = await _read_body(receive, self._max_body)
            status, data = await internal(body if isinstance(body, bytes) else b"")
            await _send(send, status, data)
            return
        if method != "POST":
            await _refuse_method(send, path, method, ("POST",))
            return
        body = await _read_body(receive, self._max_body)
        if body is None:
            return
        if body is _TOO_LARGE:
            await _answer(send, 413, {"error": f"the body is over {self._max_body} bytes."})
            return
        self.in_flight += 1
        self.requests += 1
        try:
            if endpoint.route.streaming:
                await self._stream(endpoint, body, receive, send, request_id)
            else:
                answer = await self._call(endpoint, body, request_id, receive)
                if answer is not None:
                    await _send(send, *answer)
        finally:
            self.in_flight -= 1

    async def _serve_raw(
        self, raw: _RawEndpoint, method: str, receive: Receive, send: Send, request_id: str
    ) -> None:
        """A raw route: its handler makes the whole answer (see :mod:`cobalt._runtime.raw`)."""
        route = raw.route
        if method not in route.methods:
            await _refuse_method(send, route.path, method, route.methods)
            return
        body = await _read_body(receive, self._max_body)
        if body is None:
            return
        if body is _TOO_LARGE:
            await _answer(send, 413, {"error": f"the body is over {self._max_body} bytes."})
            return
        failed = functools.partial(self._failed, raw, request_id=request_id)
        self.in_flight += 1
        self.requests += 1
        try:
            request = RawRequest(method, route.path, body, request_id, failed)
            try:
                response = await raw.handler(request)
            except Exception as exc:
                await _answer(send, 500, failed(exc))
                return
            await send_raw(response, receive, send, failed)
        finally:
            self.in_flight -= 1

    async def handle_json(self, path: str, body: bytes, request_id: str = "") -> Answer:
        """Call a non-streaming route with ``body``: (status, JSON answer)."""
        answer = await self._call(self._routes[path], body, request_id)
        assert answer is not None  # only a client that can leave gets none
        return answer

    async def _call(
        self, endpoint: _Endpoint, body: bytes, request_id: str, receive: Receive | None = None
    ) -> Answer | None:
        """The answer to one request; ``None`` when its client left while it was queued."""
        try:
            kwargs = endpoint.body.parse(body)
        except BadRequest as exc:
            return 422, dump(exc.body())
        if endpoint.batcher is not None:
            return await _batched(endpoint.batcher, kwargs, request_id, receive)
        kwargs.update(endpoint.injected)
        try:
            value = await self._invoke(endpoint, kwargs)
        except Exception as exc:
            return 500, dump(self._failed(endpoint, exc, request_id))
        return self._value(endpoint, value, request_id)

    async def _invoke(self, endpoint: _Endpoint, kwargs: dict[str, Any]) -> Any:
        if endpoint.kind == "async":
            return await endpoint.function(**kwargs)
        call = functools.partial(endpoint.function, **kwargs)
        return await asyncio.get_running_loop().run_in_executor(self._pool, call)

    def _value(self, endpoint: _Endpoint, value: Any, request_id: str) -> Answer:
        try:
            return 200, dump(value)
        except Exception as exc:
            return 500, dump(self._failed(endpoint, exc, request_id))

    def _batcher(self, endpoint: _Endpoint, batch: Batch) -> Batcher:
        async def run(columns: dict[str, list[Any]]) -> Any:
            return await self._invoke(endpoint, {**columns, **endpoint.injected})

        def fail(exc: BaseException, request_ids: str) -> Answer:
            return 500, dump(self._failed(endpoint, exc, request_ids))

        return Batcher(
            endpoint.route.name,
            batch,
            run,
            answer=functools.partial(self._value, endpoint),
            fail=fail,
        )

    def _failed(
        self, endpoint: _Endpoint | _RawEndpoint, exc: BaseException, request_id: str
    ) -> dict[str, str]:
        eid = error_id()
        name = endpoint.route.name
        which = f"requests {request_id}" if ", " in request_id else f"request {request_id or '-'}"
        print(
            f"error {eid} in {name} ({which}):\n{_user_traceback(exc)}",
            file=sys.stderr,
            flush=True,
        )
        text = str(exc)
        if isinstance(exc, BatchReturnError):
            what = text
        elif isinstance(exc, TypeError | ValueError) and "JSON serializable" in text:
            what = f"the endpoint {name} returned a value that cannot be sent as JSON: {text}"
        elif exc.__traceback__ is None:  # a batched endpoint's result for this request
            what = f"the endpoint {name} returned {type(exc).__name__}: {text}"
        else:
            what = f"the endpoint {name} raised {type(exc).__name__}: {text}"
        return {"error": what, "error_id": eid}

    async def _stream(
        self, endpoint: _Endpoint, body: bytes, receive: Receive, send: Send, request_id: str
    ) -> None:
        try:
            kwargs = endpoint.body.parse(body)
        except BadRequest as exc:
            await _send(send, 422, dump(exc.body()))
            return
        kwargs.update(endpoint.injected)
        await send({"type": "http.response.start", "status": 200, "headers": _SSE})
        gone = asyncio.Event()
        watcher = asyncio.ensure_future(_watch_disconnect(receive, gone))
        items = self._items(endpoint, kwargs)
        try:
            async for item in items:
                if gone.is_set():
                    return
                await send(
                    {
                        "type": "http.response.body",
                        "body": b"data: " + dump(item) + b"\n\n",
                        "more_body": True,
                    }
                )
            tail = b"event: end\ndata: null\n\n"
        except Exception as exc:
            tail = b"event: error\ndata: " + dump(self._failed(endpoint, exc, request_id)) + b"\n\n"
        finally:
            watcher.cancel()
            await items.aclose()
        await send({"type": "http.response.body", "body": tail, "more_body": False})

    async def _items(
        self, endpoint: _Endpoint, kwargs: dict[str, Any]
    ) -> AsyncGenerator[Any, None]:
        if endpoint.kind == "asyncgen":
            agen = endpoint.function(**kwargs)
            try:
                async for item in agen:
                    yield item
            finally:
                await agen.aclose()
            return
        loop = asyncio.get_running_loop()
        if endpoint.kind == "async":
            produced = await endpoint.function(**kwargs)
        else:
            produced = await loop.run_in_executor(
                self._pool, functools.partial(endpoint.function, **kwargs)
            )
        if hasattr(produced, "__aiter__"):
            async for item in produced:
                yield item
            return
        iterator: Iterator[Any] = iter(produced)
        try:
            while (
                item := await loop.run_in_executor(self._pool, next, iterator, _END)
            ) is not _END:
                yield item
        finally:
            close = getattr(iterator, "close", None)
            if close is not None:
                await loop.run_in_executor(self._pool, close)

    async def _unrouted(self, send: Send, method: str, path: str) -> None:
        if any(key[1] == path for key in self._internal):
            await _answer(send, 405, {"error": f"{path} does not take {method} requests."})
            return
        known = ", ".join(self._routes) or "none"
        await _answer(send, 404, {"error": f"no endpoint at {path}; the routes are {known}."})

    async def _health_answer(self, body: bytes) -> tuple[int, bytes]:
        return 200, self._health

    async def _metrics_answer(self, body: bytes) -> tuple[int, bytes]:
        cpu, gpu = self.meter.cpu_utilization(), await self.meter.gpu_utilization()
        models = model_readings(self._values)
        return 200, dump(
            {
                "replica_id": self._replica_id,
                "cpu_utilization": cpu,
                "gpu_utilization": gpu,
                "in_flight": self.in_flight,
                "requests": self.requests,
                "batch_sizes": {
                    path: e.batcher.sizes()
                    for path, e in self._routes.items()
                    if e.batcher is not None
                },
                "models": await asyncio.to_thread(models) if models is not None else {},
            }
        )

    async def _policy_answer(self, body: bytes) -> tuple[int, bytes]:
        policy = self.service.autoscaling.policy
        if policy is None:
            return 404, dump({"error": f"service {self.service.name!r} has no custom policy."})
        try:
            metrics = json.loads(body or b"{}")
            replicas = await asyncio.get_running_loop().run_in_executor(None, policy, metrics)
        except Exception as exc:
            print(
                f"the autoscaling policy raised:\n{_user_traceback(exc)}",
                file=sys.stderr,
                flush=True,
            )
            return 500, dump(
                {"error": f"the autoscaling policy raised {type(exc).__name__}: {exc}"}
            )
        if isinstance(replicas, bool) or not isinstance(replicas, int) or replicas < 0:
            return 500, dump(
                {
                    "error": f"the autoscaling policy returned {replicas!r}; "
                    "it must return a whole number >= 0."
                }
            )
        return 200, dump({"replicas": replicas})

    async def _logs_answer(self, body: bytes) -> tuple[int, bytes]:
        stdout, stderr = log_tails()
        return 200, dump({"stdout": stdout, "stderr": stderr})

    async def _shutdown_answer(self, body: bytes) -> tuple[int, bytes]:
        if self.on_shutdown is not None:
            asyncio.get_running_loop().call_later(0.05, self.on_shutdown)
        return 202, dump({"stopping": True})


def model_readings(values: Mapping[str, Any]) -> Callable[[], dict[str, Any]] | None:
    """What ``/_cobalt/metrics`` reports of the models among an initializer's values.

    A model is any value with a ``name`` and a callable ``metrics`` (an engine of
    :mod:`cobalt.llm`, or one of your own). The returned callable reads each one's
    ``metrics()`` by its key, with ``name`` added; a model whose ``metrics()``
    raises, or returns what is not a JSON object, is reported as
    ``{"name": ..., "error": ...}`` instead. ``None`` when there is no model.

    Example:
        >>> class Model:
        ...     name = "tiny"
        ...     def metrics(self):
        ...         return {"requests": 3}
        >>> model_readings({"model": Model(), "prefix": ">"})()
        {'model': {'name': 'tiny', 'requests': 3}}
    """
    found: dict[str, tuple[str, Any]] = {}
    for key, value in values.items():
        if isinstance(value, type):
            continue
        try:
            if callable(getattr(value, "metrics", None)) and hasattr(value, "name"):
                found[str(key)] = (str(value.name), value)
        except Exception:  # an attribute that raises: not a model
            continue
    if not found:
        return None

    def read() -> dict[str, Any]:
        readings: dict[str, Any] = {}
        for key, (name, model) in found.items():
            try:
                data = model.metrics()
                if not isinstance(data, dict):
                    raise TypeError(f"metrics() returned {type(data).__name__}, not a dict")
                dump(data)  # it must travel as JSON
                readings[key] = {"name": name, **data}
            except Exception as exc:
                readings[key] = {"name": name, "error": f"{type(exc).__name__}: {exc}"}
        return readings

    return read


LOG_TAIL_BYTES = 64 * 1024


def log_tails(limit: int = LOG_TAIL_BYTES) -> tuple[str, str]:
    """The last ``limit`` bytes this process wrote to stdout and stderr.

    A worker points file descriptors 1 and 2 at files, so a replica can read
    back what it printed; where they are a pipe or terminal, it returns "".
    """
    sys.stdout.flush()
    sys.stderr.flush()
    tails = []
    for fd in (1, 2):
        try:
            size = os.fstat(fd).st_size
            start = max(0, size - limit)
            text = os.pread(fd, size - start, start).decode("utf-8", errors="replace")
        except OSError:
            text = ""
        tails.append(text)
    return tails[0], tails[1]


async def _read_body(receive: Receive, limit: int) -> Any:
    """The whole body; ``None`` when the client left, ``_TOO_LARGE`` past ``limit``."""
    message = await receive()
    if message["type"] == "http.disconnect":
        return None
    body: bytes = message.get("body", b"")
    if not message.get("more_body", False):
        return body if len(body) <= limit else _TOO_LARGE
    chunks, size = [body], len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return _TOO_LARGE
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _batched(
    batcher: Batcher, kwargs: dict[str, Any], request_id: str, receive: Receive | None
) -> Answer | None:
    """Queue a request in its batcher; ``None`` when the client left before the answer.

    A client that leaves before its batch runs is dropped from the batch.
    """
    if receive is None:
        return await batcher.submit(kwargs, request_id)
    answer = asyncio.ensure_future(batcher.submit(kwargs, request_id))
    gone = asyncio.ensure_future(_disconnected(receive))
    try:
        await asyncio.wait((answer, gone), return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        if not answer.done():
            answer.cancel()
    if not answer.done() or answer.cancelled():
        return None  # cancelling it takes it out of the queue, if its batch has not run
    return answer.result()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _watch_disconnect(receive: Receive, gone: asyncio.Event) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    gone.set()


async def _send(send: Send, status: int, data: bytes) -> None:
    headers = [*_JSON, (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _answer(send: Send, status: int, value: Any) -> None:
    await _send(send, status, dump(value))


async def _refuse_method(send: Send, path: str, method: str, methods: tuple[str, ...]) -> None:
    allowed = ", ".join(methods)
    error = dump({"error": f"{path} takes {' or '.join(methods)} requests, not {method}."})
    await send_whole(send, 405, error, b"application/json", [(b"allow", allowed.encode())])


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
