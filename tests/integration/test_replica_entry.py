"""A replica process as the controller starts one: the pickled ReplicaEntry, run with
the replica's environment, reports ReplicaReady to a (fake) controller and serves."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

import cobalt as ct
from cobalt._pickling import dumps
from cobalt._runtime.replica import ReplicaEntry
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

SECRET = "replica-secret"
RUN = (
    "import cloudpickle, sys; e, a = cloudpickle.load(open(sys.argv[1], 'rb')); "
    "print('returned', e(*a))"
)


@ct.service(name="entry-demo", cpus=1)
def entry_demo(greeting: str) -> dict[str, Any]:
    if greeting == "explode":
        raise OSError("the weights are missing")
    return {"greeting": greeting}


@entry_demo.endpoint("/greet")
def greet(greeting: str, name: str) -> str:
    return f"{greeting}, {name}"


class FakeController(pb_grpc.ControllerServicer):
    def __init__(self) -> None:
        self.ready: queue.Queue[pb.ReplicaReadyRequest] = queue.Queue()
        self.keep = True

    def ReplicaReady(
        self, request: pb.ReplicaReadyRequest, context: grpc.ServicerContext
    ) -> pb.ReplicaReadyResponse:
        self.ready.put(request)
        return pb.ReplicaReadyResponse(keep=self.keep)


@pytest.fixture
def controller() -> Iterator[tuple[FakeController, str]]:
    fake = FakeController()  # type: ignore[abstract]
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ControllerServicer_to_server(fake, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield fake, f"127.0.0.1:{port}"
    server.stop(0)


def start_replica(tmp_path: Path, address: str, greeting: str) -> subprocess.Popen[str]:
    payload = tmp_path / "entry.pkl"
    payload.write_bytes(dumps((ReplicaEntry(entry_demo), [greeting]), lambda: ("entry", "entry")))
    env = {
        **os.environ,
        "COBALT_CONTROLLER_ADDRESS": address,
        "COBALT_CONTROLLER_TOKEN": "t",
        "COBALT_DEPLOYMENT": "entry-demo",
        "COBALT_REPLICA_ID": "r1-test",
        "COBALT_DEPLOYMENT_VERSION": "2",
        "COBALT_REPLICA_HOST": "127.0.0.1",
        "COBALT_REPLICA_SECRET": SECRET,
    }
    command = [sys.executable, "-c", RUN, str(payload)]
    return subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )


def test_a_replica_reports_ready_serves_and_returns_on_sigterm(
    tmp_path: Path, controller: tuple[FakeController, str]
) -> None:
    fake, address = controller
    proc = start_replica(tmp_path, address, "hello")
    try:
        ready = fake.ready.get(timeout=60)
        assert (ready.deployment, ready.replica_id, ready.pid) == (
            "entry-demo",
            "r1-test",
            proc.pid,
        )
        assert ready.url.startswith("http://127.0.0.1:")
        assert '"/greet"' in ready.openapi_json
        headers = {"x-cobalt-replica-secret": SECRET}
        with httpx.Client(base_url=ready.url, trust_env=False) as client:
            r = client.post("/greet", json={"name": "Ada"}, headers=headers)
            assert (r.status_code, r.json()) == (200, "hello, Ada")
            assert client.post("/greet", json={"name": "Ada"}).status_code == 403
            health = client.get("/_cobalt/health", headers=headers).json()
            assert (health["version"], health["pid"]) == (2, proc.pid)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        assert "returned None" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def test_a_replica_that_is_no_longer_wanted_returns_at_once(
    tmp_path: Path, controller: tuple[FakeController, str]
) -> None:
    fake, address = controller
    fake.keep = False
    proc = start_replica(tmp_path, address, "hello")
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert "returned None" in out


def test_an_initializer_that_raises_fails_the_process_with_its_traceback(
    tmp_path: Path, controller: tuple[FakeController, str]
) -> None:
    fake, address = controller
    proc = start_replica(tmp_path, address, "explode")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0
    assert "OSError: the weights are missing" in err
    assert fake.ready.empty()


def test_an_initializer_must_return_a_dict() -> None:
    svc = ct.service(lambda: ["model"], name="bad-init")  # type: ignore[arg-type,return-value]
    with pytest.raises(ct.DeploymentError, match="returned a list; it must return a dict"):
        ReplicaEntry(svc).initialize((), {})
