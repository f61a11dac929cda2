"""The Kubernetes API, through the official client, as the executor uses it.

Objects go and come as plain JSON dicts (the client's models are skipped on the
way in, which also keeps them from accepting what the API server refuses). Every
refusal becomes an :class:`ExecutorError` that carries the API server's own
words: its code, reason and message, which is what an operator needs to see
("exceeded quota", "admission webhook ... denied the request").
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
from collections.abc import Iterator
from typing import Any

from cobalt_common.errors import ExecutorError, SpecError

Manifest = dict[str, Any]
WATCH_TIMEOUT_S = 30
"""How long one watch request lasts before it is made again (the server ends it)."""
REQUEST_TIMEOUT_S = 10.0
EXTRA_HINT = (
    "install cobalt's kubernetes extra (pip install 'cobalt[kubernetes]') on the "
    "controller's machine"
)


class Refused(ExecutorError):
    """The API server refused a request (or could not be reached: ``status`` 0)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Gone(Refused):
    """A watch's resourceVersion is too old (410): list again, then watch."""

    def __init__(self, message: str) -> None:
        super().__init__(message, 410)


def import_kubernetes(executor: str) -> Any:
    try:
        return importlib.import_module("kubernetes")
    except ImportError as exc:
        raise SpecError(
            f"executor {executor!r} is of type kubernetes, but the kubernetes client is not "
            f"installed ({exc}); {EXTRA_HINT}."
        ) from None


def refusal(exc: BaseException) -> str:
    """What the API server said, in its words: ``403 Forbidden: pods "x" is
    forbidden: exceeded quota: ...``."""
    status = getattr(exc, "status", None)
    if status is None:
        return f"the Kubernetes API could not be reached: {exc}"
    reason = getattr(exc, "reason", "") or ""
    message = ""
    body = getattr(exc, "body", None)
    if body:
        try:
            parsed = json.loads(body)
            if isinstance(parsed, dict):
                message = str(parsed.get("message", ""))
        except ValueError:
            message = str(body)[:500]
    return f"{status} {reason}: {message}".strip(": ") if message else f"{status} {reason}"


class KubeApi:
    """Pods, Jobs, Secrets and Events of one namespace."""

    def __init__(self, executor: str, namespace: str, kubeconfig: str, context: str) -> None:
        kubernetes = import_kubernetes(executor)
        self.namespace = namespace
        try:
            if kubeconfig or context or not _in_cluster():
                client = kubernetes.config.new_client_from_config(
                    config_file=kubeconfig or None, context=context or None
                )
            else:
                kubernetes.config.load_incluster_config()
                client = kubernetes.client.ApiClient()
        except Exception as exc:  # the client raises ConfigException and file errors
            raise SpecError(
                f"executor {executor!r}: cannot load the Kubernetes configuration "
                f"({kubeconfig or 'the default kubeconfig'}): {exc}. Set kubeconfig = "
                '"/path/to/kubeconfig" (and context = "...") in its table.'
            ) from None
        self.host = str(client.configuration.host)
        self._client = client
        self._core = kubernetes.client.CoreV1Api(client)
        self._batch = kubernetes.client.BatchV1Api(client)
        self._watch = kubernetes.watch
        self._api_exception: type[BaseException] = kubernetes.client.exceptions.ApiException

    def _call(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("_request_timeout", REQUEST_TIMEOUT_S)
        try:
            return call(*args, **kwargs)
        except Exception as exc:
            status = int(getattr(exc, "status", 0) or 0)
            if isinstance(exc, self._api_exception) and status == 410:
                raise Gone(f"{what}: {refusal(exc)}") from None
            raise Refused(f"Kubernetes refused to {what}: {refusal(exc)}", status) from None

    def _json(self, what: str, call: Any, *args: Any, **kwargs: Any) -> Manifest:
        response = self._call(what, call, *args, _preload_content=False, **kwargs)
        try:
            parsed = json.loads(response.data)
        except ValueError:
            raise ExecutorError(f"Kubernetes answered {what} with something not JSON.") from None
        if not isinstance(parsed, dict):
            raise ExecutorError(f"Kubernetes answered {what} with {type(parsed).__name__}.")
        return parsed

    # -- writes --------------------------------------------------------------------------

    def create_secret(self, manifest: Manifest) -> None:
        name = manifest["metadata"]["name"]
        self._json(
            f"create Secret {name}", self._core.create_namespaced_secret, self.namespace, manifest
        )

    def create_pod(self, manifest: Manifest) -> Manifest:
        name = manifest["metadata"]["name"]
        return self._json(
            f"create pod {name}", self._core.create_namespaced_pod, self.namespace, manifest
        )

    def create_job(self, manifest: Manifest) -> Manifest:
        name = manifest["metadata"]["name"]
        return self._json(
            f"create Job {name}", self._batch.create_namespaced_job, self.namespace, manifest
        )

    def delete(self, kind: str, name: str) -> None:
        """Deletes a pod, Job or Secret; one already gone counts as deleted. A Job is
        deleted with ``propagationPolicy=Background``: without it, its pods stay."""
        calls = {
            "pod": self._core.delete_namespaced_pod,
            "job": self._batch.delete_namespaced_job,
            "secret": self._core.delete_namespaced_secret,
        }
        kwargs: dict[str, Any] = {}
        if kind == "job":
            kwargs["propagation_policy"] = "Background"
        try:
            self._call(f"delete {kind} {name}", calls[kind], name, self.namespace, **kwargs)
        except Refused as exc:
            if exc.status != 404:
                raise

    # -- reads ---------------------------------------------------------------------------

    def list_pods(self, selector: str) -> tuple[list[Manifest], str]:
        """The pods ``selector`` picks, and the list's resourceVersion to watch from."""
        listed = self._json(
            "list pods", self._core.list_namespaced_pod, self.namespace, label_selector=selector
        )
        items = listed.get("items") or []
        version = str((listed.get("metadata") or {}).get("resourceVersion", ""))
        return [i for i in items if isinstance(i, dict)], version

    def watch_pods(self, selector: str, version: str) -> Iterator[tuple[str, Manifest]]:
        """Pod events after ``version`` until the server ends the watch; raises
        :class:`Gone` when ``version`` is too old."""
        watch = self._watch.Watch()
        try:
            for event in watch.stream(
                self._core.list_namespaced_pod,
                self.namespace,
                label_selector=selector,
                resource_version=version,
                timeout_seconds=WATCH_TIMEOUT_S,
                _request_timeout=WATCH_TIMEOUT_S + REQUEST_TIMEOUT_S,
            ):
                kind = str(event.get("type", ""))
                raw = event.get("raw_object")
                if kind == "ERROR":
                    code = raw.get("code") if isinstance(raw, dict) else None
                    if code == 410:
                        raise Gone(f"watch from resourceVersion {version}: too old")
                    raise ExecutorError(f"the pod watch ended with an error: {raw}")
                if isinstance(raw, dict):
                    yield kind, raw
        except ExecutorError:
            raise
        except Exception as exc:
            if isinstance(exc, self._api_exception) and getattr(exc, "status", 0) == 410:
                raise Gone(f"watch: {refusal(exc)}") from None
            raise ExecutorError(f"the pod watch failed: {refusal(exc)}") from None
        finally:
            watch.stop()

    def events_of(self, name: str) -> list[Manifest]:
        """Warning events about the object ``name`` (a Job's ``FailedCreate`` says why
        its pod could not be made)."""
        listed = self._json(
            f"list events of {name}",
            self._core.list_namespaced_event,
            self.namespace,
            field_selector=f"involvedObject.name={name}",
        )
        return [e for e in listed.get("items") or [] if isinstance(e, dict)]

    def close(self) -> None:
        with contextlib.suppress(Exception):  # a pool that is already closed
            self._client.close()


def _in_cluster() -> bool:
    return bool(os.environ.get("KUBERNETES_SERVICE_HOST"))
