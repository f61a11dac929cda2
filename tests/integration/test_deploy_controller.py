"""Deployments on a real controller, with a fake replica instead of the SDK's.

The replica is a plain function of this module, pickled like any service:
it binds an aiohttp server on the host the controller names, calls the
ReplicaReady RPC itself and serves until asked to stop. That exercises
executors, the gateway, replacement and restarts without the SDK's service
code (the SDK's end-to-end tests cover that).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from support import wait_for

import cobalt as ct
from cobalt import _pickling
from cobalt._client import get_client
from cobalt_common.deploy import Autoscaling, Manifest, Route
from cobalt_common.errors import DeploymentError
from cobalt_common.hardware import HardwareSpec
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_to_pb

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

CONFIG = """\
[controller]
retry_backoff_s = 0.05
autoscale_interval_s = 0.2

[executors.local]
type = "local"
workers = 2
"""


def fake_replica(mode: str = "ok", label: str = "v1") -> None:
    """Serves ``POST /predict`` -> {"replica", "label", "pid"} like a replica would."""
    import asyncio
    import json

    from aiohttp import web

    from cobalt._client import get_client
    from cobalt_common.v1 import controller_pb2 as pb

    if mode == "fail":
        raise ValueError("the model weights are missing")
    name = os.environ["COBALT_DEPLOYMENT"]
    replica_id = os.environ["COBALT_REPLICA_ID"]
    secret = os.environ["COBALT_REPLICA_SECRET"]
    host = os.environ["COBALT_REPLICA_HOST"]

    async def main() -> None:
        stop = asyncio.Event()

        def guarded(fn: Any) -> Any:
            async def handler(request: web.Request) -> web.StreamResponse:
                if request.headers.get("x-cobalt-replica-secret") != secret:
                    return web.json_response({"error": "wrong secret"}, status=403)
                result: web.StreamResponse = await fn(request)
                return result

            return handler

        async def predict(request: web.Request) -> web.Response:
            body = await request.json()
            return web.json_response(
                {"replica": replica_id, "label": label, "pid": os.getpid(), "body": body}
            )

        async def health(request: web.Request) -> web.Response:
            return web.json_response(
                {"deployment": name, "replica_id": replica_id, "pid": os.getpid(), "ready": True}
            )

        async def shutdown(request: web.Request) -> web.Response:
            asyncio.get_running_loop().call_later(0.05, stop.set)
            return web.json_response({}, status=202)

        app = web.Application()
        app.router.add_post("/predict", guarded(predict))
        app.router.add_get("/_cobalt/health", guarded(health))
        app.router.add_post("/_cobalt/shutdown", guarded(shutdown))
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, host, 0)
        await site.start()
        port = runner.addresses[0][1]
        client = get_client()
        reply = client.call(
            client.stub.ReplicaReady,
            pb.ReplicaReadyRequest(
                deployment=name,
                replica_id=replica_id,
                url=f"http://{host}:{port}",
                pid=os.getpid(),
                openapi_json=json.dumps({"openapi": "3.1.0", "info": {"title": name}}),
            ),
        )
        if reply.keep:
            await stop.wait()
        await runner.cleanup()

    asyncio.run(main())


def deploy(
    name: str,
    *,
    mode: str = "ok",
    label: str = "v1",
    wait_s: float = 30.0,
    auth: bool = True,
    hardware: HardwareSpec | None = None,
    **autoscaling: Any,
) -> pb.Deployment:
    client = get_client()
    data = _pickling.dumps(fake_replica, lambda: ("fake_replica", "the fake replica"))
    args = {
        "mode": _pickling.dumps(mode, lambda: ("mode", "mode")),
        "label": _pickling.dumps(label, lambda: ("label", "label")),
    }
    manifest = Manifest(
        name=name,
        routes=(Route("predict", "/predict"),),
        autoscaling=Autoscaling(**{"min_replicas": 1, **autoscaling}),
        auth=auth,
    )
    payloads = [pb.Payload(sha256=_pickling.sha256_hex(data), data=data, size=len(data))]
    request = pb.DeploymentCreateRequest(
        name=name,
        manifest_json=manifest.to_json(),
        service_sha256=_pickling.sha256_hex(data),
        hardware=spec_to_pb(hardware or HardwareSpec(cpus=0.1)),
        wait_s=wait_s,
        working_dir=os.getcwd(),
    )
    for keyword, value in args.items():
        sha = _pickling.sha256_hex(value)
        request.args.add(position=-1, keyword=keyword, sha256=sha)
        payloads.append(pb.Payload(sha256=sha, data=value, size=len(value)))
    request.payloads.extend(payloads)
    reply: pb.Deployment = client.call(client.stub.DeploymentCreate, request, timeout=60)
    return reply


def get(name: str, wait_s: float = 0.0) -> pb.Deployment:
    client = get_client()
    reply: pb.Deployment = client.call(
        client.stub.DeploymentGet, pb.DeploymentGetRequest(name=name, wait_s=wait_s)
    )
    return reply


def events(name: str) -> list[pb.DeploymentEvent]:
    client = get_client()
    reply = client.call(client.stub.DeploymentEvents, pb.DeploymentEventsRequest(name=name))
    return list(reply.events)


def call(d: pb.Deployment, body: dict[str, Any] | None = None, **kwargs: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {d.token}"} if d.token else {}
    return httpx.post(d.url + "/predict", json=body or {"x": 1}, headers=headers, timeout=30)


@pytest.fixture
def home(make_controller_home: Callable[..., ControllerHome]) -> ControllerHome:
    h = make_controller_home(CONFIG)
    h.start()
    return h


def test_a_deployment_serves_through_the_gateway_once_a_replica_is_ready(
    home: ControllerHome,
) -> None:
    d = deploy("echo")
    assert d.status == pb.DEPLOYMENT_STATUS_ACTIVE, d.error
    status = get_client().call(get_client().stub.ControllerStatus, pb.ControllerStatusRequest())
    assert status.gateway and d.url == f"{status.gateway}/echo"
    assert home.info()["gateway"] == status.gateway  # type: ignore[index]
    assert d.version == 1 and d.token and d.ready_replicas == 1
    assert [r.status for r in d.replicas] == ["ready"]
    answer = call(d, {"text": "hi"})
    assert answer.status_code == 200
    assert answer.json()["replica"] == d.replicas[0].replica_id
    assert answer.json()["body"] == {"text": "hi"}
    assert httpx.post(d.url + "/predict", json={}).status_code == 401
    spec = httpx.get(d.url + "/openapi.json", headers={"Authorization": f"Bearer {d.token}"})
    assert spec.json()["info"]["title"] == "echo"
    kinds = [e.kind for e in events("echo")]
    assert {"deployed", "replica_started", "replica_ready"} <= set(kinds)


def test_a_replica_that_cannot_start_fails_the_deployment_with_its_traceback(
    home: ControllerHome,
) -> None:
    d = deploy("broken", mode="fail")
    assert d.status == pb.DEPLOYMENT_STATUS_FAILED
    assert "ValueError: the model weights are missing" in d.error
    assert "deployment_failed" in [e.kind for e in events("broken")]
    answer = call(d)
    assert answer.status_code == 503 and "failed to start" in answer.json()["error"]


def test_a_replica_that_dies_is_replaced(home: ControllerHome) -> None:
    d = deploy("phoenix")
    first = call(d).json()
    os.kill(first["pid"], signal.SIGKILL)

    def replaced() -> Any:
        answer = call(d)
        return answer.status_code == 200 and answer.json()["replica"] != first["replica"]

    wait_for(replaced, what="a new replica")
    failed = [e for e in events("phoenix") if e.kind == "replica_failed"]
    assert failed and "ended unexpectedly" in failed[0].message


def test_deploying_again_replaces_replicas_and_keeps_url_and_token(home: ControllerHome) -> None:
    one = deploy("rolling", label="v1")
    two = deploy("rolling", label="v2")
    assert (two.url, two.token, two.version) == (one.url, one.token, 2)
    assert two.status == pb.DEPLOYMENT_STATUS_ACTIVE
    wait_for(
        lambda: [r.version for r in get("rolling").replicas] == [2], what="the old replica to stop"
    )
    assert call(two).json()["label"] == "v2"


def test_teardown_stops_the_replicas_and_the_route(home: ControllerHome) -> None:
    d = deploy("brief", auth=False)
    assert d.token == "" and not d.auth
    pid = call(d).json()["pid"]
    client = get_client()
    down = client.call(client.stub.DeploymentTeardown, pb.DeploymentGetRequest(name="brief"))
    assert down.status == pb.DEPLOYMENT_STATUS_STOPPED
    assert call(d).status_code == 401  # as any name the gateway does not serve
    wait_for(lambda: not _alive(pid), what="the replica's process to exit")
    listed = client.call(client.stub.DeploymentList, pb.DeploymentListRequest())
    assert "brief" not in [x.name for x in listed.deployments]
    everything = client.call(
        client.stub.DeploymentList, pb.DeploymentListRequest(include_stopped=True)
    )
    assert "brief" in [x.name for x in everything.deployments]


def test_an_idle_deployment_scales_to_zero_and_a_request_wakes_it(home: ControllerHome) -> None:
    d = deploy("sleepy", min_replicas=0, scaledown_window=1, downscale_delay=0)
    assert d.status == pb.DEPLOYMENT_STATUS_ACTIVE
    wait_for(lambda: get("sleepy").desired_replicas == 0 and not get("sleepy").replicas)
    started = time.monotonic()
    answer = call(d)
    assert answer.status_code == 200
    assert time.monotonic() - started < 20
    kinds = [e.kind for e in events("sleepy")]
    assert "scale_down" in kinds and "scale_up" in kinds


def test_unknown_deployments_are_not_found(home: ControllerHome) -> None:
    from cobalt_common.errors import NotFoundError

    with pytest.raises(NotFoundError):
        get("nobody")


def test_a_restarted_controller_restarts_replicas_at_the_same_url(home: ControllerHome) -> None:
    d = deploy("durable")
    home.stop()
    home.start()
    again = get("durable", wait_s=30)
    assert again.url == d.url and again.token == d.token
    wait_for(lambda: call(d).status_code == 200, what="a replica after the restart")


def test_a_crashed_controller_adopts_replicas_that_still_serve(home: ControllerHome) -> None:
    d = deploy("survivor")
    before = call(d).json()
    os.kill(home.pid, signal.SIGKILL)
    wait_for(lambda: not _alive(home.pid), what="the controller to die")
    (home.path / "controller.json").unlink()
    home.start()
    after = get("survivor")
    assert [r.replica_id for r in after.replicas] == [before["replica"]]
    assert call(d).json()["pid"] == before["pid"]
    assert "replica_adopted" in [e.kind for e in events("survivor")]
    client = get_client()
    client.call(client.stub.DeploymentTeardown, pb.DeploymentGetRequest(name="survivor"))
    wait_for(lambda: not _alive(before["pid"]), what="the adopted replica to shut down")


ONE_GPU = CONFIG.replace("workers = 2\n", "workers = 2\nemulate_gpus = { h100 = 1 }\n")


@ct.electron(gpu="h100")
def on_the_gpu() -> str:
    return os.environ["COBALT_GPU_INDICES"]


@ct.lattice
def gpu_flow() -> str:
    return on_the_gpu()


def test_after_a_crash_a_task_is_not_given_the_gpu_an_adopted_replica_still_holds(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home(ONE_GPU)
    home.start()
    d = deploy("on-gpu", hardware=HardwareSpec(gpu="h100", gpus=1, cpus=0.1))
    before = call(d).json()
    os.kill(home.pid, signal.SIGKILL)
    wait_for(lambda: not _alive(home.pid), what="the controller to die")
    (home.path / "controller.json").unlink()
    home.start()
    assert [r.replica_id for r in get("on-gpu").replicas] == [before["replica"]]
    assert "replica_adopted" in [e.kind for e in events("on-gpu")]

    dispatch_id = ct.dispatch(gpu_flow)()
    time.sleep(2)
    (waiting,) = ct.get_result(dispatch_id).tasks
    assert waiting.status == ct.Status.PENDING, "the only GPU is the adopted replica's"
    client = get_client()
    client.call(client.stub.DeploymentTeardown, pb.DeploymentGetRequest(name="on-gpu"))
    wait_for(lambda: not _alive(before["pid"]), what="the adopted replica to shut down")
    result = ct.get_result(dispatch_id, wait=30)
    assert result.status == ct.Status.COMPLETED and result.result == "0"


def test_deploying_without_a_gateway_fails_clearly(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    off = CONFIG.replace("[controller]\n", '[controller]\ngateway_address = ""\n')
    home = make_controller_home(off)
    home.start()
    with pytest.raises(DeploymentError, match="gateway_address"):
        deploy("nowhere")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie child of a dead controller counts as gone
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
