"""The fake Kubernetes API server's API, driven through the official client only: what
it stores and answers (objects, watches, validation, authentication, quota and admission)
is what the Kubernetes executor's tests rely on. The cluster behind it, which runs pods,
is tested in test_kube_fake_cluster.py."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from kube_fake import AdmissionRequest, FakeKubernetes, NodeShape
from kube_fake_support import (
    NS,
    Cluster,
    cluster,  # noqa: F401
    container,
    eventually,
    job_manifest,
    pod_manifest,
    refused,
    status_of,
)
from kubernetes import client, config, watch

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def test_a_pod_is_created_read_listed_and_deleted_with_the_api_servers_shapes(
    cluster: Cluster,  # noqa: F811
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


def test_secrets_and_jobs_are_created_read_listed_and_deleted(cluster: Cluster) -> None:  # noqa: F811
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


def test_a_watch_streams_a_pods_life_in_order_and_resumes_from_a_resource_version(
    cluster: Cluster,  # noqa: F811
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


def test_a_watch_with_a_selector_sees_objects_enter_and_leave_it(cluster: Cluster) -> None:  # noqa: F811
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
    cluster: Cluster,  # noqa: F811
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


def test_a_malformed_quantity_is_refused_as_the_decoder_refuses_it(cluster: Cluster) -> None:  # noqa: F811
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


def test_quantities_are_stored_in_canonical_form(cluster: Cluster) -> None:  # noqa: F811
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


def test_invalid_objects_get_422_with_one_cause_per_field(cluster: Cluster) -> None:  # noqa: F811
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
    cluster: Cluster,  # noqa: F811
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


def test_a_request_without_the_token_gets_401_unauthorized(cluster: Cluster) -> None:  # noqa: F811
    url = f"{cluster.fake.url}/api/v1/namespaces/{NS}/pods"
    wrong = urllib.request.Request(url, headers={"Authorization": "Bearer wrong"})

    for request in (urllib.request.Request(url), wrong):
        with pytest.raises(urllib.error.HTTPError) as caught:
            urllib.request.urlopen(request, timeout=5)
        assert caught.value.code == 401
        assert json.loads(caught.value.read())["reason"] == "Unauthorized"
    assert [r.method for r in cluster.fake.requests[-2:]] == ["GET", "GET"]


def test_the_kubeconfig_loads_with_load_kube_config(cluster: Cluster) -> None:  # noqa: F811
    configuration = client.Configuration()
    config.load_kube_config(config_file=str(cluster.kubeconfig), client_configuration=configuration)
    core = client.CoreV1Api(client.ApiClient(configuration))

    assert core.list_namespaced_pod(NS).items == []
    assert cluster.fake.requests[-1].path == f"/api/v1/namespaces/{NS}/pods"


def test_quota_refuses_a_pod_and_a_jobs_pod_with_the_real_message(cluster: Cluster) -> None:  # noqa: F811
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


def test_an_admission_webhook_denies_a_create(cluster: Cluster) -> None:  # noqa: F811
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
