"""``FakeKubernetes``: the API server, control plane and kubelets of a small cluster, in
the test's process."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import threading
import types
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ._admission import Admission, Check, Webhook
from ._api import Api
from ._cluster import ControlLoop
from ._events import Recorder
from ._http import Backend, RecordedRequest, Server
from ._kinds import BY_PATH, JOBS, NAMESPACES, NODES, PODS, Resource
from ._kubelet import Kubelet
from ._meta import Json, new_uid, timestamp
from ._scheduler import NodeShape, node_object
from ._store import Store

EVICTION_MESSAGE = (
    "The node was low on resource: memory. Threshold quantity: 100Mi, available: 91236Ki. "
    "Container main was using 2097152Ki, request is 1Gi, has larger consumption of memory. "
)
"""What the kubelet's eviction manager writes on a pod evicted for memory pressure."""
KUBERNETES_VERSION = "v1.37.0"
DEFAULT_NODE = NodeShape("node-1", cpus=4, memory_mb=8192)
"""The node a cluster starts with unless told otherwise."""


class FakeKubernetes:
    """A Kubernetes API server on ``http://127.0.0.1:<port>`` that runs pods as local
    processes. Use it as a context manager::

        with FakeKubernetes(images={"cobalt-agent:1"}) as fake:
            config = fake.kubeconfig(tmp_path / "kubeconfig", namespace="cobalt")
            api = kubernetes.client.CoreV1Api(
                kubernetes.config.new_client_from_config(config_file=str(config))
            )

    Args:
        node: the cluster's first node (None: a cluster with no node, where every pod
            stays Pending until :meth:`add_node`).
        images: the image references that pull (normalized as containerd does, so
            ``python:3.11`` and ``docker.io/library/python:3.11`` are one). Kept in
            :attr:`images`, which a test may change.
        private_images: images that pull only with a matching ``imagePullSecrets`` entry.
        namespaces: the namespaces that exist.
        path: ``PATH`` in every pod's environment (default: this process's).
        root: where pod folders and logs go (default: a temporary folder removed on exit).
        grace_cap_s: the longest the fake waits between SIGTERM and SIGKILL, whatever the
            grace period says.
        watch_cap_s: the longest a watch stays open.
        history: how many watch events are kept for watches that resume from a
            resourceVersion; older ones get 410 Gone.
    """

    def __init__(
        self,
        *,
        node: NodeShape | None = DEFAULT_NODE,
        images: Iterable[str] = (),
        private_images: Iterable[str] = (),
        namespaces: Iterable[str] = ("default", "cobalt"),
        path: str | None = None,
        root: Path | None = None,
        grace_cap_s: float = 5.0,
        watch_cap_s: float = 30.0,
        history: int = 1000,
    ) -> None:
        self.token = secrets.token_urlsafe(24)
        self.images: set[str] = set(images)
        self.private_images: set[str] = set(private_images)
        self._owns_root = root is None
        self._root = Path(tempfile.mkdtemp(prefix="kube-fake-")) if root is None else root
        self._store = Store(history)
        self._recorder = Recorder(self._store)
        self._admission = Admission()
        self._kubelet = Kubelet(
            self._store,
            self._recorder,
            self._root,
            os.environ.get("PATH", "/usr/bin:/bin") if path is None else path,
            self.images,
            self.private_images,
            grace_cap_s,
        )
        self._namespaces = set(namespaces)
        self._api = Api(self._store, self._namespaces, self._admission, self._kubelet)
        self._loop = ControlLoop(self._store, self._api, self._kubelet, self._recorder)
        major, minor = KUBERNETES_VERSION[1:].split(".")[:2]
        self._backend = Backend(
            api=self._api,
            store=self._store,
            kubelet=self._kubelet,
            token=self.token,
            watch_cap_s=watch_cap_s,
            version={
                "major": major,
                "minor": minor,
                "gitVersion": KUBERNETES_VERSION,
                "gitCommit": "0" * 40,
                "gitTreeState": "clean",
                "buildDate": "2026-01-01T00:00:00Z",
                "goVersion": "go1.25.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            },
        )
        self._server: Server | None = None
        self._thread: threading.Thread | None = None
        for name in sorted(self._namespaces):
            self._store.add(NAMESPACES.plural, _namespace_object(name))
        if node is not None:
            self._store.add(NODES.plural, node_object(node, KUBERNETES_VERSION))

    # -- lifecycle ------------------------------------------------------------------------

    def __enter__(self) -> FakeKubernetes:
        self._server = Server(self._backend)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.1},
            name="kube-fake-http",
            daemon=True,
        )
        self._thread.start()
        self._loop.start()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: types.TracebackType | None,
    ) -> None:
        self._backend.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.close_connections()
            self._server.server_close()
        self._loop.stop()
        with self._store.lock:
            self._kubelet.shutdown()
        if self._owns_root:
            shutil.rmtree(self._root, ignore_errors=True)
        problems = self.errors
        if problems and kind is None:
            raise AssertionError("the fake Kubernetes API server failed:\n" + "\n".join(problems))

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("FakeKubernetes serves only inside its `with` block")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in order: (method, path, query, body)."""
        return self._backend.requests

    @property
    def errors(self) -> list[str]:
        """Tracebacks of exceptions inside the fake (answered 500 or caught in its loop)."""
        return self._backend.errors + self._loop.errors

    def kubeconfig(self, path: Path, namespace: str = "default") -> Path:
        """Writes a kubeconfig for this server (token auth, a context in ``namespace``)."""
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "fake", "cluster": {"server": self.url}}],
            "users": [{"name": "fake", "user": {"token": self.token}}],
            "contexts": [
                {
                    "name": "fake",
                    "context": {"cluster": "fake", "user": "fake", "namespace": namespace},
                }
            ],
            "current-context": "fake",
            "preferences": {},
        }
        path.write_text(json.dumps(config, indent=2))
        path.chmod(0o600)
        return path

    # -- the cluster ----------------------------------------------------------------------

    def add_node(
        self,
        name: str,
        cpus: float,
        memory_mb: int,
        gpus: int = 0,
        labels: Mapping[str, str] | None = None,
        taints: Sequence[Mapping[str, str]] = (),
    ) -> None:
        """Adds a Ready node, as a cluster autoscaler would; pending pods that fit it bind."""
        shape = NodeShape(
            name, cpus, memory_mb, gpus, dict(labels or {}), tuple(dict(t) for t in taints)
        )
        self._store.add(NODES.plural, node_object(shape, KUBERNETES_VERSION))

    def set_quota(
        self,
        namespace: str,
        *,
        cpus: float | None = None,
        memory_mb: int | None = None,
        pods: int | None = None,
        gpus: int | None = None,
        name: str = "compute",
    ) -> None:
        """A ResourceQuota ``name`` in ``namespace`` on ``limits.cpu``, ``limits.memory``,
        ``pods`` and ``requests.nvidia.com/gpu``; all None removes it."""
        hard = {}
        if cpus is not None:
            hard["limits.cpu"] = str(cpus)
        if memory_mb is not None:
            hard["limits.memory"] = f"{memory_mb}Mi"
        if pods is not None:
            hard["pods"] = str(pods)
        if gpus is not None:
            hard["requests.nvidia.com/gpu"] = str(gpus)
        with self._store.lock:
            self._admission.set_quota(namespace, name, hard)

    def deny(self, check: Check, name: str = "policy.cobalt.test", code: int = 403) -> None:
        """Installs a validating admission webhook: ``check`` sees each create and returns
        None to admit or a message to deny."""
        with self._store.lock:
            self._admission.webhooks.append(Webhook(name, check, code))

    def evict(
        self, pod_name: str, message: str = EVICTION_MESSAGE, namespace: str | None = None
    ) -> None:
        """What the kubelet's eviction manager does under node pressure: the pod's processes
        are stopped (one second's grace) and it ends ``Failed``, reason ``Evicted``, with a
        ``DisruptionTarget`` condition. The pod object stays, as on a real node."""
        with self._store.lock:
            pod = self._find(PODS, pod_name, namespace)
            self._kubelet.stop(pod["metadata"]["uid"], "Evicted", message, 1.0)
            self._store.changed.notify_all()

    # -- looking in -----------------------------------------------------------------------

    def pods(self, namespace: str | None = None) -> list[Json]:
        with self._store.lock:
            return [
                json.loads(json.dumps(pod)) for pod in self._store.items(PODS.plural, namespace)
            ]

    def get(self, kind: str, namespace: str, name: str) -> Json | None:
        """A stored object by kind (``Pod``, ``pods``, ``Job``, ``jobs``, ...)."""
        return self._store.get(_resource(kind).plural, namespace, name)

    def jobs(self, namespace: str | None = None) -> list[Json]:
        with self._store.lock:
            return [
                json.loads(json.dumps(job)) for job in self._store.items(JOBS.plural, namespace)
            ]

    def logs(self, name: str, namespace: str | None = None) -> str:
        """What the pod's container has written (stdout and stderr), "" before it runs."""
        with self._store.lock:
            pod = self._find(PODS, name, namespace)
            path = self._kubelet.log_path(pod["metadata"]["uid"])
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")

    def processes(self) -> dict[str, int]:
        """The pid of each pod's running process (its process group's id), by pod name."""
        with self._store.lock:
            return self._kubelet.pids()

    def _find(self, resource: Resource, name: str, namespace: str | None) -> Json:
        found = [
            obj
            for obj in self._store.items(resource.plural, namespace)
            if obj["metadata"]["name"] == name
        ]
        if len(found) != 1:
            where = f"namespace {namespace!r}" if namespace else "any namespace"
            raise LookupError(
                f"{len(found)} {resource.plural} named {name!r} in {where}; pass namespace="
            )
        return found[0]


def _namespace_object(name: str) -> Json:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "uid": new_uid(),
            "creationTimestamp": timestamp(),
            "labels": {"kubernetes.io/metadata.name": name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _resource(kind: str) -> Resource:
    for resource in BY_PATH.values():
        if kind in (resource.plural, resource.kind):
            return resource
    raise LookupError(
        f"unknown kind {kind!r}; the fake serves {sorted(r.kind for r in BY_PATH.values())}"
    )
