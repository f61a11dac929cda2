"""The fake Kubernetes API server, driven through the official client only: what it stores,
answers and runs is what the Kubernetes executor's tests rely on."""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kube_fake import AdmissionRequest, FakeKubernetes, NodeShape
from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

pytestmark = [pytest.mark.unit, pytest.mark.timeout(30)]

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


# -- objects -----------------------------------------------------------------------------


def test_a_pod_is_created_read_listed_and_deleted_with_the_api_servers_shapes(
    cluster: Cluster,
) -> None:
    created = cluster.core.create_namespaced_pod(NS, pod_manifest("p1"))

    assert created.api_version == "v1" and created.kind == "Pod"
    assert created.metadata.uid and created.metadata.resource_version
    assert created.metadata.creation_timestamp is not None
    assert created.status.phase == "Pending"
    assert created.spec.service_account_name == "default"
    assert created.spec.containers[0].image_pull_policy == "IfNotPresent"
    listed = cluster.core.list_namespaced_pod(NS, label_selector="app in (cobalt,other)")
    assert [pod.metadata.name for pod in listed.items] == ["p1"]
    assert int(listed.metadata.resource_version) >= int(created.metadata.resource_version)
    assert cluster.pod_names(label_selector="!app") == []
    assert cluster.pod_names(label_selector="app,app!=cobalt") == []
    running = cluster.wait_phase("p1", "Running")
    assert running.spec.node_name == "node-1"
    assert running.status.pod_ip == "127.0.0.1"

    deleted = cluster.core.delete_namespaced_pod("p1", NS)

    assert deleted.metadata.deletion_timestamp is not None
    eventually(lambda: cluster.pod_names(), lambda names: names == [])
    assert cluster.fake.processes() == {}


def test_secrets_and_jobs_are_created_read_listed_and_deleted(cluster: Cluster) -> None:
    secret = client.V1Secret(metadata=client.V1ObjectMeta(name="token"), string_data={"t": "x"})
    created = cluster.core.create_namespaced_secret(NS, secret)
    assert created.type == "Opaque"
    assert created.data == {"t": "eA=="}
    assert cluster.core.read_namespaced_secret("token", NS).data == {"t": "eA=="}
    assert [s.metadata.name for s in cluster.core.list_namespaced_secret(NS).items] == ["token"]
    gone = cluster.core.delete_namespaced_secret("token", NS)
    assert gone["status"] == "Success" and gone["details"]["kind"] == "secrets"
    assert cluster.core.list_namespaced_secret(NS).items == []

    job = cluster.batch.create_namespaced_job(NS, job_manifest("work", "true"))

    labels = job.spec.template.metadata.labels
    assert labels["job-name"] == labels["batch.kubernetes.io/job-name"] == "work"
    assert labels["controller-uid"] == job.metadata.uid
    assert job.spec.selector.match_labels == {
        "batch.kubernetes.io/controller-uid": job.metadata.uid
    }
    done = eventually(
        lambda: cluster.batch.read_namespaced_job("work", NS),
        lambda job: any(c.type == "Complete" for c in job.status.conditions or []),
    )
    assert done.status.succeeded == 1 and done.status.completion_time is not None
    assert [c.type for c in done.status.conditions] == ["SuccessCriteriaMet", "Complete"]
    assert [j.metadata.name for j in cluster.batch.list_namespaced_job(NS).items] == ["work"]
    reasons = sorted(event.reason for event in cluster.job_events("work"))
    assert reasons == ["Completed", "SuccessfulCreate"]
    cluster.batch.delete_namespaced_job("work", NS, propagation_policy="Background")
    eventually(lambda: cluster.batch.list_namespaced_job(NS).items, lambda jobs: jobs == [])


def test_a_pods_command_runs_with_the_secret_and_the_pod_ip_in_its_environment(
    cluster: Cluster,
) -> None:
    cluster.core.create_namespaced_secret(
        NS,
        client.V1Secret(metadata=client.V1ObjectMeta(name="creds"), string_data={"key": "s3cret"}),
    )
    env = [
        client.V1EnvVar(
            name="TOKEN",
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name="creds", key="key")
            ),
        ),
        client.V1EnvVar(
            name="MY_IP",
            value_from=client.V1EnvVarSource(
                field_ref=client.V1ObjectFieldSelector(field_path="status.podIP")
            ),
        ),
        client.V1EnvVar(name="GREETING", value="ip=$(MY_IP)"),
    ]
    env_from = [
        client.V1EnvFromSource(prefix="CREDS_", secret_ref=client.V1SecretEnvSource(name="creds"))
    ]
    main = container(
        'echo "$TOKEN $GREETING $HOSTNAME $CREDS_key"; pwd', env=env, env_from=env_from
    )
    cluster.core.create_namespaced_pod(NS, pod_manifest("runs", main=main))

    done = cluster.wait_phase("runs", "Succeeded", "Failed")

    assert done.status.phase == "Succeeded"
    state = done.status.container_statuses[0].state.terminated
    assert (state.exit_code, state.reason) == (0, "Completed")
    first, folder = cluster.fake.logs("runs").splitlines()
    assert first == "s3cret ip=127.0.0.1 runs s3cret"
    assert Path(folder).is_dir()
    assert cluster.core.read_namespaced_pod_log("runs", NS) == cluster.fake.logs("runs")


def test_a_missing_secret_key_holds_the_container_in_create_container_config_error(
    cluster: Cluster,
) -> None:
    env = [
        client.V1EnvVar(
            name="TOKEN",
            value_from=client.V1EnvVarSource(
                secret_key_ref=client.V1SecretKeySelector(name="absent", key="key")
            ),
        )
    ]
    cluster.core.create_namespaced_pod(NS, pod_manifest("config", main=container("true", env=env)))

    pod = eventually(
        lambda: cluster.pod("config"),
        lambda pod: (
            bool(pod.status.container_statuses)
            and pod.status.container_statuses[0].state.waiting.reason != "ContainerCreating"
        ),
    )

    waiting = pod.status.container_statuses[0].state.waiting
    assert (waiting.reason, waiting.message) == (
        "CreateContainerConfigError",
        'secret "absent" not found',
    )
    assert pod.status.phase == "Pending"


# -- watches -----------------------------------------------------------------------------


def test_a_watch_streams_a_pods_life_in_order_and_resumes_from_a_resource_version(
    cluster: Cluster,
) -> None:
    start = cluster.core.list_namespaced_pod(NS).metadata.resource_version
    cluster.core.create_namespaced_pod(NS, pod_manifest("short", "true"))
    cluster.wait_phase("short", "Succeeded")
    cluster.core.delete_namespaced_pod("short", NS)

    seen: list[tuple[str, str, str]] = []
    stream = watch.Watch()
    for event in stream.stream(
        cluster.core.list_namespaced_pod, NS, resource_version=start, timeout_seconds=5
    ):
        pod = event["object"]
        seen.append((event["type"], pod.status.phase, pod.metadata.resource_version))
        if event["type"] == "DELETED":
            stream.stop()

    kinds = [kind for kind, _, _ in seen]
    assert kinds[0] == "ADDED" and kinds[-1] == "DELETED"
    assert set(kinds[1:-1]) == {"MODIFIED"}
    phases = [phase for _, phase, _ in seen]
    assert phases.index("Running") < phases.index("Succeeded")
    versions = [int(rv) for _, _, rv in seen]
    assert versions == sorted(versions)

    middle = seen[len(seen) // 2][2]
    resumed = [
        (event["type"], event["object"].metadata.resource_version)
        for event in watch.Watch().stream(
            cluster.core.list_namespaced_pod, NS, resource_version=middle, timeout_seconds=1
        )
    ]
    assert resumed == [(kind, rv) for kind, _, rv in seen if int(rv) > int(middle)]


def test_a_watch_with_a_selector_sees_objects_enter_and_leave_it(cluster: Cluster) -> None:
    start = cluster.core.list_namespaced_pod(NS).metadata.resource_version
    cluster.core.create_namespaced_pod(NS, pod_manifest("brief", "true"))
    cluster.wait_phase("brief", "Succeeded")

    events = [
        (event["type"], event["object"].status.phase)
        for event in watch.Watch().stream(
            cluster.core.list_namespaced_pod,
            NS,
            field_selector="status.phase=Running",
            resource_version=start,
            timeout_seconds=1,
        )
    ]

    assert events == [("ADDED", "Running"), ("DELETED", "Succeeded")]


def test_a_watch_without_a_resource_version_starts_with_the_current_objects(
    cluster: Cluster,
) -> None:
    cluster.core.create_namespaced_secret(
        NS, client.V1Secret(metadata=client.V1ObjectMeta(name="a"))
    )

    events = list(watch.Watch().stream(cluster.core.list_namespaced_secret, NS, timeout_seconds=1))

    assert [(e["type"], e["object"].metadata.name) for e in events] == [("ADDED", "a")]


def test_a_watch_from_a_compacted_resource_version_gets_410_gone(tmp_path: Path) -> None:
    with FakeKubernetes(history=3, root=tmp_path / "fake") as fake:
        cluster = Cluster(fake, tmp_path)
        start = cluster.core.list_namespaced_secret(NS).metadata.resource_version
        for index in range(5):
            meta = client.V1ObjectMeta(name=f"s{index}")
            cluster.core.create_namespaced_secret(NS, client.V1Secret(metadata=meta))

        response = cluster.core.list_namespaced_secret(
            NS, watch=True, resource_version=start, timeout_seconds=1, _preload_content=False
        )
        lines = [line for line in response.data.decode().splitlines() if line]
        error = refused(
            lambda: list(
                watch.Watch().stream(
                    cluster.core.list_namespaced_secret,
                    NS,
                    resource_version=start,
                    timeout_seconds=1,
                )
            )
        )

    event = json.loads(lines[0])
    assert event["type"] == "ERROR"
    assert event["object"]["code"] == 410 and event["object"]["reason"] == "Expired"
    assert event["object"]["message"].startswith(f"too old resource version: {start} (")
    assert error.status == 410


# -- refusals ----------------------------------------------------------------------------


def test_a_malformed_quantity_is_refused_as_the_decoder_refuses_it(cluster: Cluster) -> None:
    resources = client.V1ResourceRequirements(limits={"memory": "48GB"})
    manifest = pod_manifest("q", main=container("true", resources=resources))

    error = refused(lambda: cluster.core.create_namespaced_pod(NS, manifest))

    assert error.status == 400
    status = status_of(error)
    assert status["reason"] == "BadRequest"
    assert status["message"] == (
        'Pod in version "v1" cannot be handled as a Pod: quantities must match the regular '
        "expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
    )


def test_quantities_are_stored_in_canonical_form(cluster: Cluster) -> None:
    resources = client.V1ResourceRequirements(
        limits={"cpu": "1.5", "memory": "49152Mi"}, requests={"cpu": "500m", "memory": "48Gi"}
    )
    node = NodeShape("big", cpus=8, memory_mb=65536)
    cluster.fake.add_node(node.name, node.cpus, node.memory_mb)

    pod = cluster.core.create_namespaced_pod(
        NS, pod_manifest("q", main=container("true", resources=resources))
    )

    assert pod.spec.containers[0].resources.limits == {"cpu": "1500m", "memory": "48Gi"}
    assert pod.status.qos_class == "Burstable"


def test_invalid_objects_get_422_with_one_cause_per_field(cluster: Cluster) -> None:
    bad_name = refused(lambda: cluster.core.create_namespaced_pod(NS, pod_manifest("Bad_Name")))
    bad_policy = refused(
        lambda: cluster.core.create_namespaced_pod(
            NS, pod_manifest("p", restart_policy="Sometimes")
        )
    )
    limits = client.V1ResourceRequirements(limits={"cpu": "1"}, requests={"cpu": "2"})
    over = refused(
        lambda: cluster.core.create_namespaced_pod(
            NS, pod_manifest("p", main=container("true", resources=limits))
        )
    )
    long_job = refused(lambda: cluster.batch.create_namespaced_job(NS, job_manifest("j" * 64)))
    always = job_manifest("j")
    always.spec.template.spec.restart_policy = "Always"
    job_policy = refused(lambda: cluster.batch.create_namespaced_job(NS, always))

    assert {e.status for e in (bad_name, bad_policy, over, long_job, job_policy)} == {422}
    name_status = status_of(bad_name)
    assert name_status["reason"] == "Invalid"
    assert name_status["details"]["kind"] == "Pod"
    assert name_status["details"]["causes"][0]["field"] == "metadata.name"
    assert name_status["message"].startswith(
        'Pod "Bad_Name" is invalid: metadata.name: Invalid value: "Bad_Name": '
        "a lowercase RFC 1123 subdomain"
    )
    assert status_of(bad_policy)["message"] == (
        'Pod "p" is invalid: spec.restartPolicy: Unsupported value: "Sometimes": '
        'supported values: "Always", "OnFailure", "Never"'
    )
    assert status_of(over)["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "2": must be less than or equal to cpu limit of 1',
            "field": "spec.containers[0].resources.requests",
        }
    ]
    long_causes = status_of(long_job)["details"]["causes"]
    assert long_causes[0]["field"] == "spec.template.metadata.labels"
    assert "must be no more than 63 characters" in long_causes[0]["message"]
    assert status_of(job_policy)["message"] == (
        'Job.batch "j" is invalid: spec.template.spec.restartPolicy: Unsupported value: '
        '"Always": supported values: "OnFailure", "Never"'
    )
    assert cluster.pod_names() == [] and cluster.batch.list_namespaced_job(NS).items == []


def test_duplicates_missing_objects_and_unknown_namespaces_get_the_api_servers_statuses(
    cluster: Cluster,
) -> None:
    cluster.core.create_namespaced_pod(NS, pod_manifest("twice"))
    duplicate = refused(lambda: cluster.core.create_namespaced_pod(NS, pod_manifest("twice")))
    missing = refused(lambda: cluster.batch.read_namespaced_job("nothing", NS))
    nowhere = refused(lambda: cluster.core.create_namespaced_pod("elsewhere", pod_manifest("p")))

    assert (duplicate.status, status_of(duplicate)["reason"]) == (409, "AlreadyExists")
    assert status_of(duplicate)["message"] == 'pods "twice" already exists'
    assert (missing.status, status_of(missing)["message"]) == (
        404,
        'jobs.batch "nothing" not found',
    )
    assert status_of(missing)["details"] == {"name": "nothing", "group": "batch", "kind": "jobs"}
    assert (nowhere.status, status_of(nowhere)["message"]) == (
        404,
        'namespaces "elsewhere" not found',
    )


def test_a_request_without_the_token_gets_401_unauthorized(cluster: Cluster) -> None:
    url = f"{cluster.fake.url}/api/v1/namespaces/{NS}/pods"
    wrong = urllib.request.Request(url, headers={"Authorization": "Bearer wrong"})

    for request in (urllib.request.Request(url), wrong):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 401
        assert json.loads(caught.value.read())["reason"] == "Unauthorized"
    assert [r.method for r in cluster.fake.requests[-2:]] == ["GET", "GET"]


def test_the_kubeconfig_loads_with_load_kube_config(cluster: Cluster) -> None:
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    core = client.CoreV1Api(client.ApiClient(configuration))

    assert core.list_namespaced_pod(NS).items == []
    assert cluster.fake.requests[-1].path == f"/api/v1/namespaces/{NS}/pods"


# -- admission and scheduling ------------------------------------------------------------


def test_quota_refuses_a_pod_and_a_jobs_pod_with_the_real_message(cluster: Cluster) -> None:
    cluster.fake.set_quota(NS, cpus=4)
    two = client.V1ResourceRequirements(limits={"cpu": "2"})
    four = client.V1ResourceRequirements(limits={"cpu": "4"})
    cluster.core.create_namespaced_pod(
        NS, pod_manifest("first", main=container("sleep 30", resources=two))
    )

    error = refused(
        lambda: cluster.core.create_namespaced_pod(
            NS, pod_manifest("x", main=container("true", resources=four))
        )
    )
    job = job_manifest("big")
    job.spec.template.spec.containers[0].resources = four
    cluster.batch.create_namespaced_job(NS, job)

    expected = (
        "exceeded quota: compute, requested: limits.cpu=4, used: limits.cpu=2, "
        "limited: limits.cpu=4"
    )
    assert error.status == 403
    assert status_of(error)["message"] == f'pods "x" is forbidden: {expected}'
    events = eventually(lambda: cluster.job_events("big"), lambda events: bool(events))
    assert (events[0].reason, events[0].type) == ("FailedCreate", "Warning")
    assert events[0].message.startswith('Error creating: pods "big-')
    assert events[0].message.endswith(f"is forbidden: {expected}")
    assert cluster.pod_names() == ["first"]
    status = cluster.batch.read_namespaced_job("big", NS).status
    assert not status.active and not status.conditions


def test_an_admission_webhook_denies_a_create(cluster: Cluster) -> None:
    def no_latest(request: AdmissionRequest) -> str | None:
        image = request.object["spec"]["containers"][0]["image"]
        return "images must be pinned" if image.endswith(":latest") else None

    cluster.fake.deny(no_latest, name="pinned.images.test")
    manifest = pod_manifest("p")
    manifest.spec.containers[0].image = "cobalt-agent:latest"

    error = refused(lambda: cluster.core.create_namespaced_pod(NS, manifest))

    assert error.status == 403
    assert status_of(error)["message"] == (
        'admission webhook "pinned.images.test" denied the request: images must be pinned'
    )


def test_a_pod_that_fits_no_node_stays_pending_until_a_node_is_added(tmp_path: Path) -> None:
    with FakeKubernetes(
        images={IMAGE}, node=NodeShape("small", cpus=1, memory_mb=1024), root=tmp_path / "f"
    ) as fake:
        cluster = Cluster(fake, tmp_path)
        resources = client.V1ResourceRequirements(requests={"cpu": "2"})
        gpu = {"gpu": "yes"}
        manifest = pod_manifest(
            "wide", main=container("sleep 30", resources=resources), node_selector=gpu
        )
        cluster.core.create_namespaced_pod(NS, manifest)

        pending = eventually(lambda: cluster.pod("wide"), lambda pod: bool(pod.status.conditions))
        fake.add_node("gpu-node", cpus=1, memory_mb=4096, labels=gpu)
        still = eventually(
            lambda: cluster.pod("wide"),
            lambda pod: "2 nodes" in (pod.status.conditions[0].message or ""),
        )
        fake.add_node("large", cpus=4, memory_mb=4096, labels=gpu)
        running = cluster.wait_phase("wide", "Running")

    condition = pending.status.conditions[0]
    assert (condition.type, condition.status, condition.reason) == (
        "PodScheduled",
        "False",
        "Unschedulable",
    )
    assert condition.message == (
        "0/1 nodes are available: 1 node(s) didn't match Pod's node affinity/selector. "
        "preemption: 0/1 nodes are available: 1 Preemption is not helpful for scheduling."
    )
    assert pending.status.phase == "Pending"
    assert still.status.conditions[0].message.startswith(
        "0/2 nodes are available: 1 Insufficient cpu, "
        "1 node(s) didn't match Pod's node affinity/selector."
    )
    assert running.spec.node_name == "large"


def test_a_gpu_pod_binds_only_to_a_gpu_node_whose_taint_it_tolerates(tmp_path: Path) -> None:
    taint = {"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}
    with FakeKubernetes(images={IMAGE}, root=tmp_path / "f") as fake:
        cluster = Cluster(fake, tmp_path)
        fake.add_node("gpu-1", cpus=8, memory_mb=8192, gpus=2, taints=[taint])
        gpus = client.V1ResourceRequirements(limits={"nvidia.com/gpu": "1"})
        intolerant = pod_manifest("intolerant", main=container("sleep 30", resources=gpus))
        tolerant = pod_manifest(
            "tolerant",
            main=container("sleep 30", resources=gpus),
            tolerations=[client.V1Toleration(key="nvidia.com/gpu", operator="Exists")],
        )
        cluster.core.create_namespaced_pod(NS, intolerant)
        cluster.core.create_namespaced_pod(NS, tolerant)

        running = cluster.wait_phase("tolerant", "Running")
        pending = eventually(lambda: cluster.pod("intolerant"), lambda p: bool(p.status.conditions))

    assert running.spec.node_name == "gpu-1"
    assert running.spec.containers[0].resources.requests == {"nvidia.com/gpu": "1"}
    assert pending.status.conditions[0].message.startswith(
        "0/2 nodes are available: 1 Insufficient nvidia.com/gpu, "
        "1 node(s) had untolerated taint {nvidia.com/gpu: present}."
    )


# -- images, deadlines, eviction ---------------------------------------------------------


def test_an_image_that_does_not_pull_shows_err_image_pull_then_back_off(cluster: Cluster) -> None:
    manifest = pod_manifest("nopull")
    manifest.spec.containers[0].image = "missing/agent:1"
    cluster.core.create_namespaced_pod(NS, manifest)

    def waiting_reason(pod: client.V1Pod) -> str:
        statuses = pod.status.container_statuses or []
        return (
            str(statuses[0].state.waiting.reason) if statuses and statuses[0].state.waiting else ""
        )

    first = eventually(
        lambda: cluster.pod("nopull"), lambda pod: waiting_reason(pod) == "ErrImagePull"
    )
    later = eventually(
        lambda: cluster.pod("nopull"), lambda pod: waiting_reason(pod) == "ImagePullBackOff"
    )

    message = first.status.container_statuses[0].state.waiting.message
    assert message == (
        "rpc error: code = NotFound desc = failed to pull and unpack image "
        '"docker.io/missing/agent:1": failed to resolve reference "docker.io/missing/agent:1": '
        "docker.io/missing/agent:1: not found"
    )
    assert later.status.container_statuses[0].state.waiting.message.startswith(
        'Back-off pulling image "missing/agent:1"'
    )
    assert later.status.phase == "Pending"
    assert cluster.fake.processes() == {}


def test_a_private_image_pulls_only_with_a_matching_pull_secret(tmp_path: Path) -> None:
    private = "registry.example.com/team/agent:1"
    with FakeKubernetes(private_images={private}, root=tmp_path / "f") as fake:
        cluster = Cluster(fake, tmp_path)
        without = pod_manifest("without", "true")
        without.spec.containers[0].image = private
        cluster.core.create_namespaced_pod(NS, without)
        auth = json.dumps({"auths": {"registry.example.com": {"auth": "dTpw"}}})
        cluster.core.create_namespaced_secret(
            NS,
            client.V1Secret(
                metadata=client.V1ObjectMeta(name="pull"),
                type="kubernetes.io/dockerconfigjson",
                string_data={".dockerconfigjson": auth},
            ),
        )
        with_secret = pod_manifest(
            "with", "true", image_pull_secrets=[client.V1LocalObjectReference(name="pull")]
        )
        with_secret.spec.containers[0].image = private
        cluster.core.create_namespaced_pod(NS, with_secret)

        succeeded = cluster.wait_phase("with", "Succeeded")
        refused_pull = eventually(
            lambda: cluster.pod("without"), lambda pod: bool(pod.status.container_statuses)
        )

    assert succeeded.status.phase == "Succeeded"
    waiting = refused_pull.status.container_statuses[0].state.waiting
    assert waiting.reason in ("ErrImagePull", "ImagePullBackOff")
    assert "401 Unauthorized" in waiting.message


def test_a_pod_past_its_active_deadline_is_killed_and_failed(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(
        NS, pod_manifest("late", "sleep 30", active_deadline_seconds=1)
    )
    pid = eventually(cluster.fake.processes, lambda pids: "late" in pids)["late"]

    failed = cluster.wait_phase("late", "Failed")

    assert (failed.status.reason, failed.status.message) == (
        "DeadlineExceeded",
        "Pod was active on the node longer than the specified deadline",
    )
    assert failed.status.container_statuses[0].state.terminated.exit_code == 143
    assert cluster.fake.processes() == {}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_deleting_a_pod_that_ignores_sigterm_kills_it_after_its_grace_period(
    cluster: Cluster,
) -> None:
    cluster.core.create_namespaced_pod(
        NS, pod_manifest("stubborn", "trap '' TERM; sleep 30 & wait")
    )
    cluster.wait_phase("stubborn", "Running")
    time.sleep(0.2)

    started = time.monotonic()
    deleted = cluster.core.delete_namespaced_pod("stubborn", NS, grace_period_seconds=1)
    eventually(lambda: cluster.pod_names(), lambda names: names == [])

    assert deleted.metadata.deletion_grace_period_seconds == 1
    assert 0.9 <= time.monotonic() - started < 4
    assert cluster.fake.processes() == {}


def test_an_evicted_pod_is_killed_and_failed_with_the_kubelets_reason(cluster: Cluster) -> None:
    cluster.core.create_namespaced_pod(NS, pod_manifest("evictee", "sleep 30"))
    cluster.wait_phase("evictee", "Running")

    cluster.fake.evict("evictee")
    failed = cluster.wait_phase("evictee", "Failed")

    assert failed.status.reason == "Evicted"
    assert failed.status.message.startswith("The node was low on resource: memory.")
    target = [c for c in failed.status.conditions if c.type == "DisruptionTarget"]
    assert target and target[0].reason == "TerminationByKubelet"
    assert cluster.fake.processes() == {}


# -- jobs --------------------------------------------------------------------------------


def test_a_job_past_its_deadline_fails_and_its_pod_is_killed(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(NS, job_manifest("slow", active_deadline_seconds=1))

    failed = eventually(
        lambda: cluster.batch.read_namespaced_job("slow", NS),
        lambda job: any(c.type == "Failed" for c in job.status.conditions or []),
    )

    assert [(c.type, c.reason) for c in failed.status.conditions] == [
        ("FailureTarget", "DeadlineExceeded"),
        ("Failed", "DeadlineExceeded"),
    ]
    assert failed.status.failed == 1 and not failed.status.active
    assert cluster.fake.processes() == {}


def test_a_failed_pod_with_backoff_limit_zero_fails_the_job_without_a_second_pod(
    cluster: Cluster,
) -> None:
    cluster.batch.create_namespaced_job(NS, job_manifest("once", "exit 3"))

    failed = eventually(
        lambda: cluster.batch.read_namespaced_job("once", NS),
        lambda job: any(c.type == "Failed" for c in job.status.conditions or []),
    )

    assert failed.status.conditions[-1].reason == "BackoffLimitExceeded"
    pods = cluster.core.list_namespaced_pod(NS, label_selector="job-name=once").items
    assert len(pods) == 1
    assert pods[0].status.container_statuses[0].state.terminated.exit_code == 3
    assert pods[0].metadata.owner_references[0].controller is True
    assert not pods[0].metadata.finalizers


def test_deleting_a_job_in_the_background_deletes_its_pods(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(NS, job_manifest("bg"))
    eventually(cluster.fake.processes, lambda pids: len(pids) == 1)

    cluster.batch.delete_namespaced_job("bg", NS, propagation_policy="Background")

    assert cluster.batch.list_namespaced_job(NS).items == []
    eventually(lambda: cluster.pod_names(), lambda names: names == [])
    assert cluster.fake.processes() == {}
    deletes = [r for r in cluster.fake.requests if r.method == "DELETE"]
    assert deletes[-1].query == {"propagationPolicy": "Background"}


def test_deleting_a_job_without_a_propagation_policy_orphans_its_running_pod(
    cluster: Cluster,
) -> None:
    cluster.batch.create_namespaced_job(NS, job_manifest("orphaning"))
    pids = eventually(cluster.fake.processes, lambda pids: len(pids) == 1)

    cluster.batch.delete_namespaced_job("orphaning", NS)

    eventually(lambda: cluster.batch.list_namespaced_job(NS).items, lambda jobs: jobs == [])
    (name,) = cluster.pod_names()
    pod = eventually(lambda: cluster.pod(name), lambda pod: not pod.metadata.owner_references)
    assert pod.status.phase == "Running"
    assert cluster.fake.processes() == pids


def test_a_finished_job_with_a_ttl_is_deleted_with_its_pods(cluster: Cluster) -> None:
    cluster.batch.create_namespaced_job(
        NS, job_manifest("brief", "true", ttl_seconds_after_finished=0)
    )

    eventually(lambda: cluster.batch.list_namespaced_job(NS).items, lambda jobs: jobs == [])

    eventually(lambda: cluster.pod_names(), lambda names: names == [])
    assert "SuccessfulCreate" in {e.reason for e in cluster.job_events("brief")}


def test_leaving_the_context_kills_every_pod_process(tmp_path: Path) -> None:
    with FakeKubernetes(images={IMAGE}, root=tmp_path / "f") as fake:
        cluster = Cluster(fake, tmp_path)
        cluster.core.create_namespaced_pod(NS, pod_manifest("lingering", "trap '' TERM; sleep 30"))
        pid = eventually(fake.processes, lambda pids: "lingering" in pids)["lingering"]

    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
