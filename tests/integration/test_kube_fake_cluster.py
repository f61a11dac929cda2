"""The cluster behind the fake Kubernetes API server, driven through the official client
only: its scheduler (nodes, taints, Pending pods), its kubelet (a pod's command as a local
process, its environment, image pulls, deadlines, eviction, graceful deletion) and its Job
controller (backoff, deadlines, deletion with and without propagation, TTL)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from kube_fake import FakeKubernetes, NodeShape
from kube_fake_support import (
    IMAGE,
    NS,
    Cluster,
    cluster,  # noqa: F401
    container,
    eventually,
    job_manifest,
    pod_manifest,
)
from kubernetes import client

pytestmark = [pytest.mark.integration, pytest.mark.timeout(30)]


def test_a_pods_command_runs_with_the_secret_and_the_pod_ip_in_its_environment(
    cluster: Cluster,  # noqa: F811
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
    cluster: Cluster,  # noqa: F811
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


def test_an_image_that_does_not_pull_shows_err_image_pull_then_back_off(cluster: Cluster) -> None:  # noqa: F811
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


def test_a_pod_past_its_active_deadline_is_killed_and_failed(cluster: Cluster) -> None:  # noqa: F811
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
    cluster: Cluster,  # noqa: F811
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


def test_an_evicted_pod_is_killed_and_failed_with_the_kubelets_reason(cluster: Cluster) -> None:  # noqa: F811
    cluster.core.create_namespaced_pod(NS, pod_manifest("evictee", "sleep 30"))
    cluster.wait_phase("evictee", "Running")

    cluster.fake.evict("evictee")
    failed = cluster.wait_phase("evictee", "Failed")

    assert failed.status.reason == "Evicted"
    assert failed.status.message.startswith("The node was low on resource: memory.")
    target = [c for c in failed.status.conditions if c.type == "DisruptionTarget"]
    assert target and target[0].reason == "TerminationByKubelet"
    assert cluster.fake.processes() == {}


def test_a_job_past_its_deadline_fails_and_its_pod_is_killed(cluster: Cluster) -> None:  # noqa: F811
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
    cluster: Cluster,  # noqa: F811
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


def test_deleting_a_job_in_the_background_deletes_its_pods(cluster: Cluster) -> None:  # noqa: F811
    cluster.batch.create_namespaced_job(NS, job_manifest("bg"))
    eventually(cluster.fake.processes, lambda pids: len(pids) == 1)

    cluster.batch.delete_namespaced_job("bg", NS, propagation_policy="Background")

    assert cluster.batch.list_namespaced_job(NS).items == []
    eventually(lambda: cluster.pod_names(), lambda names: names == [])
    assert cluster.fake.processes() == {}
    deletes = [r for r in cluster.fake.requests if r.method == "DELETE"]
    assert deletes[-1].query == {"propagationPolicy": "Background"}


def test_deleting_a_job_without_a_propagation_policy_orphans_its_running_pod(
    cluster: Cluster,  # noqa: F811
) -> None:
    cluster.batch.create_namespaced_job(NS, job_manifest("orphaning"))
    pids = eventually(cluster.fake.processes, lambda pids: len(pids) == 1)

    cluster.batch.delete_namespaced_job("orphaning", NS)

    eventually(lambda: cluster.batch.list_namespaced_job(NS).items, lambda jobs: jobs == [])
    (name,) = cluster.pod_names()
    pod = eventually(lambda: cluster.pod(name), lambda pod: not pod.metadata.owner_references)
    assert pod.status.phase == "Running"
    assert cluster.fake.processes() == pids


def test_a_finished_job_with_a_ttl_is_deleted_with_its_pods(cluster: Cluster) -> None:  # noqa: F811
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
