"""What the tests of the fake Kubernetes API server share: a started fake with the official
client's APIs configured from its kubeconfig, and manifests built with the client's models."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kube_fake import FakeKubernetes
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

NS = "cobalt"
IMAGE = "cobalt-agent:test"
T = TypeVar("T")


def eventually(read: Callable[[], T], done: Callable[[T], bool], timeout: float = 8.0) -> T:
    """Reads until ``done`` holds; fails with the last value read."""
    deadline = time.monotonic() + timeout
    while True:
        value = read()
        if done(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"still not done after {timeout} s: {value!r}")
        time.sleep(0.05)


class Cluster:
    """A started fake and the official client's APIs, configured from its kubeconfig."""

    def __init__(self, fake: FakeKubernetes, folder: Path) -> None:
        self.fake = fake
        self.kubeconfig = fake.kubeconfig(folder / "kubeconfig", namespace=NS)
        self.api_client = config.new_client_from_config(config_file=str(self.kubeconfig))
        self.core = client.CoreV1Api(self.api_client)
        self.batch = client.BatchV1Api(self.api_client)

    def pod(self, name: str) -> client.V1Pod:
        return self.core.read_namespaced_pod(name, NS)

    def phase(self, name: str) -> str:
        return str(self.pod(name).status.phase)

    def wait_phase(self, name: str, *phases: str) -> client.V1Pod:
        return eventually(lambda: self.pod(name), lambda pod: pod.status.phase in phases)

    def pod_names(self, **selectors: Any) -> list[str]:
        pods = self.core.list_namespaced_pod(NS, **selectors).items
        return [pod.metadata.name for pod in pods]

    def job_events(self, job: str) -> list[client.CoreV1Event]:
        selector = f"involvedObject.name={job}"
        return list(self.core.list_namespaced_event(NS, field_selector=selector).items)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    with FakeKubernetes(images={IMAGE}, root=tmp_path / "fake") as fake:
        yield Cluster(fake, tmp_path)


def container(command: str, **fields: Any) -> client.V1Container:
    return client.V1Container(
        name="main", image=IMAGE, command=["/bin/sh", "-c", command], **fields
    )


def pod_manifest(name: str, command: str = "sleep 30", **spec: Any) -> client.V1Pod:
    main = spec.pop("main", None) or container(command)
    return client.V1Pod(
        metadata=client.V1ObjectMeta(name=name, labels={"app": "cobalt"}),
        spec=client.V1PodSpec(
            restart_policy=spec.pop("restart_policy", "Never"),
            termination_grace_period_seconds=spec.pop("termination_grace_period_seconds", 1),
            containers=[main],
            **spec,
        ),
    )


def job_manifest(name: str, command: str = "sleep 30", **spec: Any) -> client.V1Job:
    template = client.V1PodTemplateSpec(
        metadata=client.V1ObjectMeta(labels={"app": "cobalt"}),
        spec=client.V1PodSpec(
            restart_policy="Never",
            termination_grace_period_seconds=1,
            containers=[container(command)],
        ),
    )
    return client.V1Job(
        metadata=client.V1ObjectMeta(name=name),
        spec=client.V1JobSpec(backoff_limit=0, template=template, **spec),
    )


def status_of(error: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(error.body)
    return body


def refused(call: Callable[[], object]) -> ApiException:
    with pytest.raises(ApiException) as caught:
        call()
    return caught.value
