"""The Kubernetes executor passes the executor contract on the fake API server
(``tests/service_kubernetes.py``): its pilot is a pod, created through the real
``kubernetes`` client, whose container runs as a local process; its agent dials a
real agent service over gRPC and runs each task in its warm workers.

A Kubernetes executor has no room until a pilot pod runs: it creates one when a
task finds none. So the harness begins as a scheduler would, offering a task of
the whole contract size (the node's size), which is refused and creates a pilot
of that size, and waits for it to attach; from then on the executor is the
contract's size. When a test ends, the executor is torn down and the harness waits
for its pods and Secrets to be gone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from executor_contract import ExecutorContract, ExecutorHarness
from kube_fake import FakeKubernetes
from pilot_harness import PilotHarness
from service_kubernetes import NAMESPACE, check_manifests, fake_cluster, kube_options
from support import wait_for

from cobalt_executors.kubernetes import KubernetesExecutor

pytestmark = pytest.mark.integration


class KubernetesHarness(PilotHarness):
    """The local harness's tasks and gates, run by an agent in a pilot pod."""

    def __init__(self, tmp_path: Path, fake: FakeKubernetes, **options: Any) -> None:
        self.fake = fake
        options = kube_options(fake, tmp_path, prefetch=0, **options)
        super().__init__(tmp_path, KubernetesExecutor("k8s", options))

    def wait_gone(self) -> None:
        wait_for(
            lambda: not self.fake.pods(NAMESPACE) and not self.fake.processes(),
            timeout=30,
            what="the executor's pods to be gone after its teardown",
        )
        secrets = [r for r in self.fake.requests if r.method == "DELETE" and "/secrets/" in r.path]
        assert secrets, "the pilot's Secret was deleted with it"


@pytest.fixture(scope="module")
def contract_kube(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FakeKubernetes]:
    with fake_cluster(tmp_path_factory.mktemp("kube")) as fake:
        yield fake
        check_manifests(fake)


class TestKubernetesExecutorContract(ExecutorContract):
    @pytest.fixture
    def harness(self, tmp_path: Path, contract_kube: FakeKubernetes) -> Iterator[ExecutorHarness]:
        harness = KubernetesHarness(tmp_path, contract_kube)
        yield harness
        harness.close()
