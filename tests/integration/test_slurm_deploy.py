"""Deployments whose replicas run in Slurm pilots, on the real single-node cluster of
``tests/service_slurm.py`` (2 CPUs, so at most two 1-CPU pilots at once), with a real
controller started by the CLI and its gateway on loopback.

Covered: a replica runs inside a pilot's job, advertises the address on its route to
the controller, and answers real HTTP through the gateway, which still asks for the
deployment's token; the pilot that holds it has ``replica_time`` as its walltime,
outlives the idle timeout, and leaves ``squeue`` once the deployment is torn down; a
replica does not start on a task's pilot with too little walltime left; a pilot
cancelled from outside loses its replica, and a new one answers from a new pilot;
scaling to zero releases the pilot, and a request brings a new one; in job-per-task
mode a replica's job has ``replica_time`` and ends with it.

A pilot whose walltime ends is not waited for here (Slurm's limits are whole minutes,
checked every 30 s): to cobalt it is the ``scancel`` case, a job that ends under its
agent.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from service_slurm import SlurmCluster, slurm_cluster, slurm_config  # noqa: F401
from support import wait_for

import cobalt as ct
from cobalt._client import get_client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

REPLICA_TIME = 'replica_time = "30min"\n'
"""A replica asks a pilot for 15 min left: more than a 10-min task pilot has."""


def _where(started_in: int) -> dict[str, Any]:
    return {
        "pid": os.getpid(),
        "started_in": started_in,
        "job": os.environ.get("SLURM_JOB_ID", ""),
        "at": os.environ.get("COBALT_REPLICA_ADVERTISE", ""),
    }


@ct.service(name="in-slurm", executor="hpc", cpus=1, min_replicas=1, max_replicas=1)
def in_slurm() -> dict[str, Any]:
    return {"started_in": os.getpid()}


@in_slurm.endpoint("/where")
def where(started_in: int) -> dict[str, Any]:
    return _where(started_in)


@ct.service(
    name="naps-in-slurm",
    executor="hpc",
    cpus=1,
    autoscaling=ct.Autoscaling(
        min_replicas=0, max_replicas=1, scaledown_window=1, downscale_delay=0
    ),
)
def naps_in_slurm() -> dict[str, Any]:
    return {"started_in": os.getpid()}


@naps_in_slurm.endpoint("/where")
def naps_where(started_in: int) -> dict[str, Any]:
    return _where(started_in)


@ct.electron(executor="hpc")
def job_of_task() -> str:
    return os.environ.get("SLURM_JOB_ID", "")


@ct.lattice
def one_task() -> str:
    return job_of_task()


def _deployment(name: str) -> pb.Deployment:
    client = get_client()
    reply: pb.Deployment = client.call(
        client.stub.DeploymentGet, pb.DeploymentGetRequest(name=name)
    )
    return reply


def _ready(name: str) -> list[pb.Replica]:
    return [r for r in _deployment(name).replicas if r.status == "ready"]


def _time_limit(cluster: SlurmCluster, job: str) -> str:
    return cluster.run("squeue", "-h", "-j", job, "-o", "%l").strip()


def _home(
    make: Callable[..., ControllerHome], cluster: SlurmCluster, idle_timeout_s: int
) -> ControllerHome:
    config = slurm_config(cluster, REPLICA_TIME, gateway=True)
    home = make(config.replace("idle_timeout_s = 30", f"idle_timeout_s = {idle_timeout_s}"))
    home.start()
    return home


def test_a_replica_runs_in_a_pilot_that_outlives_the_idle_timeout_and_ends_with_the_deployment(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    _home(make_controller_home, slurm_cluster, idle_timeout_s=1)
    with ct.deploy(in_slurm)() as deployment:
        first = deployment.where()
        job = first["job"]
        assert job and job in slurm_cluster.job_ids(), "the replica runs inside a pilot's job"
        assert first["pid"] == first["started_in"], "the replica's own process answered"
        assert first["at"] == "127.0.0.1", "it advertises its address toward the controller"
        [replica] = _ready("in-slurm")
        assert replica.executor == "hpc"
        assert replica.url.startswith("http://127.0.0.1:"), replica.url
        assert _time_limit(slurm_cluster, job) == "31:00", "replica_time, plus the margin"
        with httpx.Client(timeout=30, trust_env=False) as http:
            refused = http.post(f"{deployment.url}/where", json={})
            direct = http.post(f"{replica.url}/where", json={})
        assert refused.status_code == 401, "the gateway still asks for the deployment's token"
        assert direct.status_code in (401, 403), "the replica itself wants its secret"
        time.sleep(4)  # four idle timeouts
        assert job in slurm_cluster.job_ids(), "a pilot that holds a replica is not idle"
        assert deployment.where() == first, "the same replica answers, in the same pilot"
    wait_for(
        lambda: job not in slurm_cluster.job_ids(),
        timeout=20,
        what="the pilot to be released once the deployment was torn down",
    )


def test_a_replica_does_not_start_on_a_task_pilot_whose_walltime_is_too_short(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    _home(make_controller_home, slurm_cluster, idle_timeout_s=30)
    task_job = ct.dispatch_sync(one_task)().result
    assert task_job and _time_limit(slurm_cluster, task_job) == "11:00"
    with ct.deploy(in_slurm)() as deployment:
        job = deployment.where()["job"]
        assert job and job != task_job, "the idle 10-min pilot had room but too little time"
        assert _time_limit(slurm_cluster, job) == "31:00"
        assert task_job in slurm_cluster.job_ids(), "the task's pilot still waits for work"


def test_a_replica_whose_pilot_is_cancelled_from_outside_is_replaced_in_a_new_pilot(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    _home(make_controller_home, slurm_cluster, idle_timeout_s=30)
    with ct.deploy(in_slurm)() as deployment:
        first = deployment.where()
        [lost] = _ready("in-slurm")
        slurm_cluster.run("scancel", first["job"])

        def reported_lost() -> bool:
            return any(
                e.kind == "replica_failed" and e.inputs.get("reason") == "agent_lost"
                for e in deployment.events()
            )

        wait_for(reported_lost, timeout=15, what="the replica to be reported lost")
        wait_for(
            lambda: [r for r in _ready("in-slurm") if r.replica_id != lost.replica_id],
            timeout=60,
            what="a new replica to be ready",
        )
        second = deployment.where()
        assert second["job"] and second["job"] != first["job"], "in a new pilot"
        assert second["pid"] == second["started_in"]


def test_a_deployment_scaled_to_zero_releases_its_pilot_and_a_request_brings_one_back(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    _home(make_controller_home, slurm_cluster, idle_timeout_s=1)
    with ct.deploy(naps_in_slurm)() as deployment:
        job = deployment.call("/where")["job"]
        assert job in slurm_cluster.job_ids()
        wait_for(
            lambda: (
                not _deployment("naps-in-slurm").replicas and job not in slurm_cluster.job_ids()
            ),
            timeout=30,
            what="the deployment to scale to zero and its pilot to leave squeue",
        )
        again = deployment.call("/where")
        assert again["job"] and again["job"] != job, "a request woke it in a new pilot"


def test_in_job_per_task_mode_a_replica_gets_a_job_of_its_own_that_ends_when_it_stops(
    make_controller_home: Callable[..., ControllerHome],
    slurm_cluster: SlurmCluster,  # noqa: F811
) -> None:
    config = slurm_config(slurm_cluster, REPLICA_TIME + 'mode = "job_per_task"\n', gateway=True)
    make_controller_home(config).start()
    with ct.deploy(in_slurm)() as deployment:
        job = deployment.where()["job"]
        assert job in slurm_cluster.job_ids()
        assert _time_limit(slurm_cluster, job) == "32:00", "replica_time, plus two margins"
    wait_for(
        lambda: job not in slurm_cluster.job_ids(),
        timeout=20,
        what="the replica's job to end with it",
    )
