"""The HTTP front: authentication, the REST paths, JSON answers, watch and log streams.

Paths served (``{ns}`` a namespace, ``{name}`` an object):

* ``GET /version``
* ``/api/v1/namespaces/{ns}/pods`` GET (list, ``?watch=true``), POST; ``.../pods/{name}``
  GET, DELETE; ``.../pods/{name}/log`` GET (``container``, ``tailLines``, ``limitBytes``,
  ``follow``)
* ``/api/v1/namespaces/{ns}/secrets`` the same verbs; ``/api/v1/namespaces/{ns}/events``
  GET (list, watch)
* ``/apis/batch/v1/namespaces/{ns}/jobs`` GET (list, watch), POST; ``.../jobs/{name}``
  GET, DELETE
* ``/api/v1/{pods,secrets,events}`` and ``/apis/batch/v1/jobs``: list and watch in every
  namespace; ``/api/v1/nodes[/{name}]`` and ``/api/v1/namespaces[/{name}]``: get, list, watch

Every request needs ``Authorization: Bearer <token>`` (else 401 ``Unauthorized``). Other
paths are 404 ``the server could not find the requested resource``; other verbs on these
paths (PUT, PATCH, deletecollection) are 405. A watch is a chunked stream of one JSON event
per line; it ends after ``timeoutSeconds``, capped by the fake.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
import traceback
import urllib.parse
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple

from ._api import Api
from ._errors import ApiError, bad_request, method_not_allowed, no_route, unauthorized
from ._kinds import BY_PATH, PODS, Resource
from ._kubelet import Kubelet
from ._meta import Json
from ._selectors import SelectorError, fields_match, labels_match, parse_fields, parse_labels
from ._store import Store, parse_rv

MAX_BODY = 3 * 1024 * 1024
"""The API server's limit on a request body."""


class RecordedRequest(NamedTuple):
    """One request as it arrived: the query with each parameter's last value, the body
    parsed as JSON (None when empty, the text when it is not JSON)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any


@dataclass
class Backend:
    api: Api
    store: Store
    kubelet: Kubelet
    token: str
    watch_cap_s: float
    version: Json
    requests: list[RecordedRequest] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, backend: Backend) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.backend = backend
        self.connections: set[socket.socket] = set()
        self.connections_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.connections_lock:
            self.connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.connections_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def close_connections(self) -> None:
        with self.connections_lock:
            connections = list(self.connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)


@dataclass(frozen=True, slots=True)
class _NotJson:
    """A request body that does not parse as JSON, and the parser's words."""

    why: str


class _Route(NamedTuple):
    resource: Resource
    namespace: str | None
    name: str
    subresource: str


def _route(path: str) -> _Route | None:
    parts = [urllib.parse.unquote(part) for part in path.strip("/").split("/")]
    if len(parts) >= 2 and parts[0] == "api" and parts[1] == "v1":
        group_version, rest = "v1", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group_version, rest = f"{parts[1]}/{parts[2]}", parts[3:]
    else:
        return None
    namespace = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    resource = BY_PATH.get((group_version, rest[0]))
    if resource is None or (namespace is not None and not resource.namespaced):
        return None
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    if resource.namespaced and namespace is None and name:
        return None
    if subresource and (resource is not PODS or subresource != "log"):
        return None
    return _Route(resource, namespace, name, subresource)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the fake's requests are in ``FakeKubernetes.requests``."""

    def do_GET(self) -> None:
        self._handle("GET")

    def do_POST(self) -> None:
        self._handle("POST")

    def do_DELETE(self) -> None:
        self._handle("DELETE")

    def do_PUT(self) -> None:
        self._handle("PUT")

    def do_PATCH(self) -> None:
        self._handle("PATCH")

    # -- plumbing -------------------------------------------------------------------------

    @property
    def backend(self) -> Backend:
        return self.server.backend

    def _send_json(self, code: int, body: Json, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, separators=(",", ":")).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    def _read_body(self) -> tuple[Any, bytes]:
        length_text = self.headers.get("Content-Length")
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self.close_connection = True
            raise bad_request("chunked request bodies are not accepted by this fake API server")
        if not length_text:
            return None, b""
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            raise bad_request("invalid Content-Length") from None
        if length > MAX_BODY:
            self.close_connection = True
            raise ApiError(
                413, "RequestEntityTooLarge", f"Request entity too large: limit is {MAX_BODY}"
            )
        raw = self.rfile.read(length)
        if not raw:
            return None, raw
        try:
            return json.loads(raw), raw
        except ValueError as error:
            return _NotJson(str(error)), raw
        except RecursionError:
            return _NotJson("exceeded max depth"), raw

    def _handle(self, method: str) -> None:
        backend = self.backend
        url = urllib.parse.urlsplit(self.path)
        query = {
            key: values[-1]
            for key, values in urllib.parse.parse_qs(url.query, keep_blank_values=True).items()
        }
        try:
            body, raw = self._read_body()
        except ApiError as error:
            backend.requests.append(RecordedRequest(method, url.path, query, None))
            self._send_json(error.code, error.status())
            return
        recorded = raw.decode("utf-8", errors="replace") if isinstance(body, _NotJson) else body
        backend.requests.append(RecordedRequest(method, url.path, query, recorded))
        try:
            if self.headers.get("Authorization", "") != f"Bearer {backend.token}":
                raise unauthorized()
            self._dispatch(method, url.path, query, body, raw)
        except ApiError as error:
            self._send_json(error.code, error.status())
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True
        except Exception as error:
            backend.errors.append(traceback.format_exc())
            failure = ApiError(500, "InternalError", f"Internal error occurred: {error!r}")
            self._send_json(500, failure.status())

    def _dispatch(
        self, method: str, path: str, query: dict[str, str], body: Any, raw: bytes
    ) -> None:
        backend = self.backend
        if path.rstrip("/") == "/version" and method == "GET":
            self._send_json(200, backend.version)
            return
        route = _route(path)
        if route is None:
            raise no_route()
        resource, namespace, name, sub = route
        if isinstance(body, _NotJson):
            raise bad_request(f"couldn't get version/kind; json parse error: {body.why}")
        if sub == "log":
            if method != "GET":
                raise method_not_allowed(method, path)
            self._log(namespace or "", name, query)
            return
        if not name:
            if method == "GET":
                if query.get("watch") in ("true", "1"):
                    self._watch(resource, namespace, query)
                else:
                    self._send_json(200, backend.api.list(resource, namespace, query))
                return
            if method == "POST" and resource.writable and namespace is not None:
                strict = query.get("fieldValidation") == "Strict"
                created, warnings = backend.api.create(resource, namespace, body, strict)
                headers = (
                    {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else {}
                )
                self._send_json(201, created, headers)
                return
            raise method_not_allowed(method, path)
        scope = namespace or ""
        if method == "GET":
            self._send_json(200, backend.api.get(resource, scope, name))
            return
        if method == "DELETE" and resource.writable:
            self._send_json(200, backend.api.delete(resource, scope, name, query, body))
            return
        raise method_not_allowed(method, path)

    # -- watch ----------------------------------------------------------------------------

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()

    def _start_stream(self, content_type: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", content_type)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Cache-Control", "no-cache, private")
        self.end_headers()

    def _event(self, kind: str, obj: Json) -> None:
        self._chunk(
            json.dumps({"type": kind, "object": obj}, separators=(",", ":")).encode() + b"\n"
        )

    def _watch(self, resource: Resource, namespace: str | None, query: dict[str, str]) -> None:
        backend = self.backend
        store = backend.store
        try:
            labels = parse_labels(query.get("labelSelector", ""))
            fields = parse_fields(query.get("fieldSelector", ""), resource.plural)
        except SelectorError as refused:
            raise bad_request(str(refused)) from None
        cap = backend.watch_cap_s
        timeout_text = query.get("timeoutSeconds", "")
        try:
            timeout = min(float(int(timeout_text)), cap) if timeout_text else cap
        except ValueError:
            raise bad_request(f'invalid value for timeoutSeconds: "{timeout_text}"') from None
        if timeout <= 0:
            timeout = cap
        rv_text = query.get("resourceVersion", "")
        start = parse_rv(rv_text) if rv_text not in ("", "0") else None

        def matches(obj: Json | None) -> bool:
            return obj is not None and labels_match(labels, obj) and fields_match(fields, obj)

        initial: list[tuple[str, Json]] = []
        gone: ApiError | None = None
        with store.lock:
            if start is None:
                initial = [
                    ("ADDED", json.loads(json.dumps(obj)))
                    for obj in store.items(resource.plural, namespace)
                    if matches(obj)
                ]
                cursor = store.rv
            else:
                cursor = start
        self._start_stream("application/json")
        try:
            for kind, obj in initial:
                self._event(kind, obj)
            deadline = time.monotonic() + timeout
            while not backend.stopping.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                with store.lock:
                    try:
                        changes = list(store.changes_after(cursor, resource.plural, namespace))
                    except ApiError as expired:
                        changes, gone = [], expired
                    if not changes and gone is None:
                        store.changed.wait(timeout=min(remaining, 0.5))
                        continue
                if gone is not None:
                    self._event("ERROR", gone.status())
                    return
                for change in changes:
                    cursor = change.rv
                    now_matches = matches(change.obj)
                    if change.type == "MODIFIED":
                        was = matches(change.old)
                        if was and now_matches:
                            self._event("MODIFIED", change.obj)
                        elif now_matches:
                            self._event("ADDED", change.obj)
                        elif was:
                            self._event("DELETED", change.obj)
                    elif now_matches:
                        self._event(change.type, change.obj)
            if query.get("allowWatchBookmarks") == "true":
                bookmark = {
                    "kind": resource.kind,
                    "apiVersion": resource.api_version,
                    "metadata": {"resourceVersion": str(cursor)},
                }
                self._event("BOOKMARK", bookmark)
        finally:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                self.close_connection = True

    # -- logs -----------------------------------------------------------------------------

    def _log(self, namespace: str, name: str, query: dict[str, str]) -> None:
        backend = self.backend
        pod = backend.api.get(PODS, namespace, name)
        containers = [c["name"] for c in pod["spec"].get("containers") or []]
        wanted = query.get("container", "")
        if not wanted:
            if len(containers) > 1:
                raise bad_request(
                    f"a container name must be specified for pod {name}, choose one of: "
                    f"[{' '.join(containers)}]"
                )
            wanted = containers[0]
        if wanted not in containers:
            raise bad_request(f"container {wanted} is not valid for pod {name}")
        if wanted != containers[0]:
            raise bad_request(
                f'container "{wanted}" in pod "{name}" is not run by this fake API server'
            )
        if query.get("previous") == "true":
            raise bad_request(f'previous terminated container "{wanted}" in pod "{name}" not found')
        if not pod["spec"].get("nodeName"):
            raise bad_request(f"pod {name} does not have a host assigned")
        uid = pod["metadata"]["uid"]
        path = backend.kubelet.log_path(uid)
        if path is None or not path.exists():
            statuses = (pod.get("status") or {}).get("containerStatuses") or [{}]
            waiting = (statuses[0].get("state") or {}).get("waiting") or {}
            reason = waiting.get("reason", "ContainerCreating")
            if reason in ("ErrImagePull", "ImagePullBackOff"):
                reason = "trying and failing to pull image"
            raise bad_request(f'container "{wanted}" in pod "{name}" is waiting to start: {reason}')
        if query.get("follow") == "true":
            self._follow(uid, path)
            return
        data = path.read_bytes()
        data = _tail(data, query)
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _follow(self, uid: str, path: Path) -> None:
        backend = self.backend
        self._start_stream("text/plain")
        try:
            with path.open("rb") as log:
                while not backend.stopping.is_set():
                    data = log.read(65536)
                    if data:
                        self._chunk(data)
                        continue
                    with backend.store.lock:
                        running = backend.kubelet.is_running(uid)
                    if not running:
                        rest = log.read()
                        if rest:
                            self._chunk(rest)
                        break
                    time.sleep(0.05)
        finally:
            try:
                self.wfile.write(b"0\r\n\r\n")
                self.wfile.flush()
            except OSError:
                self.close_connection = True


def _tail(data: bytes, query: dict[str, str]) -> bytes:
    lines_text = query.get("tailLines", "")
    if lines_text:
        try:
            count = int(lines_text)
        except ValueError:
            raise bad_request(f'invalid value for tailLines: "{lines_text}"') from None
        lines = data.splitlines(keepends=True)
        data = b"".join(lines[-count:]) if count > 0 else b""
    limit_text = query.get("limitBytes", "")
    if limit_text:
        try:
            data = data[: int(limit_text)]
        except ValueError:
            raise bad_request(f'invalid value for limitBytes: "{limit_text}"') from None
    return data
