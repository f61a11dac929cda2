"""Deployments end to end: the real SDK against a real controller, over loopback HTTP.

Services are deployed with ``ct.deploy``, replicas are real worker processes
serving the SDK's replica app, and every call goes through the controller's
gateway, with the handle or with plain httpx as any other client would.
Faults, autoscaling and controller restarts are in ``test_deploy_faults.py``.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from conftest import DEPLOY_CONFIG_TOML
from support import wait_for

import cobalt as ct
from cobalt._client import get_client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = pytest.mark.integration

CONFIG = DEPLOY_CONFIG_TOML

BODY_LIMIT = 2048


@ct.service(name="classifier", cpus=0.25, min_replicas=1, max_replicas=1, max_body_bytes=BODY_LIMIT)
def classifier(model_name: str) -> dict[str, Any]:
    return {"model": {"name": model_name, "bias": 0.5}}


@classifier.endpoint("/predict")
def predict(model: dict[str, Any], text: str, times: int = 1) -> dict[str, Any]:
    if text == "boom":
        raise ValueError("the text exploded the model")
    return {"label": f"{model['name']}:{text * times}", "score": model["bias"], "pid": os.getpid()}


@classifier.endpoint("/stream", streaming=True)
def stream(model: dict[str, Any], text: str) -> Iterator[str]:
    for word in text.split():
        yield f"{model['name']}:{word}"


# -- helpers ---------------------------------------------------------------------------


def bearer(token: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"} if token else {}


def rpc_get(name: str) -> pb.Deployment:
    client = get_client()
    reply: pb.Deployment = client.call(
        client.stub.DeploymentGet, pb.DeploymentGetRequest(name=name)
    )
    return reply


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerHome]:
    from conftest import ControllerHome

    with ControllerHome(tmp_path_factory.mktemp("cobalt-deploy"), CONFIG).serving() as h:
        yield h


@pytest.fixture(scope="module")
def dep(home: ControllerHome) -> Iterator[ct.Deployment]:
    with ct.deploy(classifier)("small") as d:
        yield d


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=30, trust_env=False) as client:
        yield client


# -- the handle ------------------------------------------------------------------------


def test_deploy_returns_an_active_handle_with_url_routes_and_token(
    home: ControllerHome, dep: ct.Deployment
) -> None:
    gateway = home.info()["gateway"]  # type: ignore[index]
    assert dep.url == f"{gateway}/classifier"
    assert dep.routes == ["/predict", "/stream"]
    assert dep.token and dep.auth
    assert dep.status == "active"
    assert dep.replicas == 1
    assert {"predict", "async_predict", "stream", "async_stream"} <= set(dir(dep))


def test_each_route_is_a_method_of_the_handle_and_streams_iterate(dep: ct.Deployment) -> None:
    answer = dep.predict(text="hi", times=2)
    assert (answer["label"], answer["score"]) == ("small:hihi", 0.5)
    assert list(dep.stream(text="a b c")) == ["small:a", "small:b", "small:c"]
    assert dep.call("/predict", text="x")["label"] == "small:x"


def test_async_methods_call_and_stream_without_blocking(dep: ct.Deployment) -> None:
    async def main() -> tuple[list[Any], list[str]]:
        answers = await asyncio.gather(*(dep.async_predict(text=str(i)) for i in range(4)))
        streamed = [item async for item in dep.async_stream(text="x y")]
        return answers, streamed

    answers, streamed = asyncio.run(main())
    assert [a["label"] for a in answers] == ["small:0", "small:1", "small:2", "small:3"]
    assert streamed == ["small:x", "small:y"]


def test_a_fresh_handle_and_the_listing_find_the_deployment(dep: ct.Deployment) -> None:
    fresh = ct.get_deployment("classifier")
    try:
        assert (fresh.url, fresh.token, fresh.routes) == (dep.url, dep.token, dep.routes)
        assert fresh.predict(text="again")["label"] == "small:again"
    finally:
        fresh.close()
    listed = {d.name: d for d in ct.list_deployments()}
    assert listed["classifier"].url == dep.url
    assert "active" in repr(listed["classifier"])
    with pytest.raises(ct.NotFoundError, match="no deployment named 'nobody'"):
        ct.get_deployment("nobody")


def test_deploying_without_waiting_returns_at_once_and_becomes_active(
    home: ControllerHome,
) -> None:
    @ct.service(name="lazy", cpus=0.25, min_replicas=1)
    def lazy() -> dict[str, Any]:
        time.sleep(1.5)
        return {}

    @lazy.endpoint("/ping")
    def ping() -> str:
        return "pong"

    started = time.monotonic()
    with ct.deploy(lazy, wait=False)() as d:
        assert time.monotonic() - started < 1.0
        assert d.status == "starting"
        wait_for(lambda: d.status == "active", what="the deployment to become active")
        assert d.ping() == "pong"


# -- plain HTTP ------------------------------------------------------------------------


def test_plain_http_posts_json_with_the_bearer_token(
    dep: ct.Deployment, http: httpx.Client
) -> None:
    r = http.post(f"{dep.url}/predict", json={"text": "hi"}, headers=bearer(dep.token))
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/json")
    assert r.json()["label"] == "small:hi"


def test_a_streaming_route_answers_server_sent_events(
    dep: ct.Deployment, http: httpx.Client
) -> None:
    url, headers = f"{dep.url}/stream", bearer(dep.token)
    with http.stream("POST", url, json={"text": "one two"}, headers=headers) as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in r.iter_lines() if line]
    assert lines == [
        'data: "small:one"',
        'data: "small:two"',
        "event: end",
        "data: null",
    ]


def test_openapi_describes_each_route_and_its_fields(
    dep: ct.Deployment, http: httpx.Client
) -> None:
    r = http.get(f"{dep.url}/openapi.json", headers=bearer(dep.token))
    assert r.status_code == 200
    spec = r.json()
    assert set(spec["paths"]) == {"/predict", "/stream"}
    body = spec["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    schema = body["schema"]
    assert set(schema["properties"]) == {"text", "times"}  # model is injected, not read
    assert schema["required"] == ["text"]
    assert schema["properties"]["times"]["type"] == "integer"
    assert dep.openapi() == spec
    assert http.get(f"{dep.url}/openapi.json").status_code == 401


# -- bad input -------------------------------------------------------------------------


def test_malformed_json_answers_422_saying_so(dep: ct.Deployment, http: httpx.Client) -> None:
    headers = {**bearer(dep.token), "Content-Type": "application/json"}
    r = http.post(f"{dep.url}/predict", content=b'{"text": "hi"', headers=headers)
    assert r.status_code == 422
    assert "json" in r.json()["error"].lower()


def test_a_missing_or_mistyped_field_answers_422_naming_the_field(
    dep: ct.Deployment, http: httpx.Client
) -> None:
    url, headers = f"{dep.url}/predict", bearer(dep.token)
    missing = http.post(url, json={}, headers=headers)
    assert missing.status_code == 422
    assert missing.json()["field"] == "text" and "text" in missing.json()["error"]
    mistyped = http.post(url, json={"text": "hi", "times": "many"}, headers=headers)
    assert mistyped.status_code == 422
    assert mistyped.json()["field"] == "times" and "times" in mistyped.json()["error"]
    with pytest.raises(ct.EndpointError, match="times") as caught:
        dep.predict(text="hi", times=[1])
    assert (caught.value.status_code, caught.value.field) == (422, "times")


def test_a_missing_or_wrong_token_answers_401(dep: ct.Deployment, http: httpx.Client) -> None:
    url = f"{dep.url}/predict"
    for headers in ({}, bearer("not-the-token"), {"Authorization": dep.token or ""}):
        r = http.post(url, json={"text": "hi"}, headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"] == "Bearer"
        assert "Authorization: Bearer <token>" in r.json()["error"]
    stale = ct.Deployment(dep.name, dep.url, dep.endpoints, token="stale")
    with pytest.raises(ct.AuthenticationError, match=r"dep\.token"):
        stale.predict(text="hi")


def test_unknown_deployments_answer_401_and_unknown_routes_404_naming_what_exists(
    dep: ct.Deployment, http: httpx.Client
) -> None:
    gateway = dep.url.rsplit("/", 1)[0]
    for headers in ({}, bearer(dep.token)):  # no token opens a deployment that is not there
        nobody = http.post(f"{gateway}/nobody/predict", json={"text": "hi"}, headers=headers)
        assert nobody.status_code == 401
        assert "deployment 'nobody' needs 'Authorization: Bearer <token>'" in nobody.json()["error"]
    route = http.post(f"{dep.url}/classify", json={"text": "hi"}, headers=bearer(dep.token))
    assert route.status_code == 404
    error = route.json()["error"]
    assert "'/classify'" in error and "/predict" in error and "/stream" in error
    with pytest.raises(ct.NotFoundError, match="/classify"):
        dep.call("/classify", text="hi")


def test_a_body_over_the_limit_answers_413(dep: ct.Deployment, http: httpx.Client) -> None:
    text = "x" * (BODY_LIMIT + 10)
    r = http.post(f"{dep.url}/predict", json={"text": text}, headers=bearer(dep.token))
    assert r.status_code == 413
    assert f"limit of {BODY_LIMIT} bytes" in r.json()["error"]
    assert "max_body_bytes" in r.json()["error"]
    with pytest.raises(ct.EndpointError, match="max_body_bytes") as caught:
        dep.predict(text=text)
    assert caught.value.status_code == 413
    assert dep.predict(text="short")["label"] == "small:short"


def test_an_endpoint_that_raises_answers_500_with_an_error_id_and_the_replica_goes_on(
    home: ControllerHome, dep: ct.Deployment, http: httpx.Client
) -> None:
    before = dep.predict(text="before")["pid"]
    r = http.post(f"{dep.url}/predict", json={"text": "boom"}, headers=bearer(dep.token))
    assert r.status_code == 500
    body = r.json()
    assert body["error"] == "the endpoint predict raised ValueError: the text exploded the model"
    error_id = body["error_id"]
    assert error_id
    with pytest.raises(ct.EndpointError, match="exploded") as caught:
        dep.predict(text="boom")
    assert caught.value.status_code == 500 and caught.value.error_id
    assert dep.predict(text="after")["pid"] == before  # the same replica, still serving
    in_log = f"error {error_id} in predict"

    def logged() -> str:
        text = dep.logs()
        return text if in_log in text else ""

    logs = wait_for(logged, timeout=10, what=f"{in_log!r} in the replica's log")
    assert "ValueError: the text exploded the model" in logs.split(in_log, 1)[1]
    assert in_log in home.cli("deployments", "logs", dep.name).stdout


# -- tokens and open deployments -------------------------------------------------------


def test_rotating_the_token_retires_the_old_one_at_once(
    home: ControllerHome, http: httpx.Client
) -> None:
    @ct.service(name="rotor", cpus=0.25, min_replicas=1)
    def rotor() -> dict[str, Any]:
        return {}

    @rotor.endpoint("/echo")
    def echo(x: int) -> int:
        return x

    with ct.deploy(rotor)() as d:
        old = d.token
        new = d.rotate_token()
        assert new and new != old and d.token == new
        url = f"{d.url}/echo"
        assert http.post(url, json={"x": 1}, headers=bearer(old)).status_code == 401
        r = http.post(url, json={"x": 2}, headers=bearer(new))
        assert (r.status_code, r.json()) == (200, 2)
        assert d.echo(x=3) == 3
        assert ct.get_deployment("rotor").token == new


def test_an_open_deployment_answers_without_a_token_and_every_listing_says_so(
    home: ControllerHome, http: httpx.Client
) -> None:
    @ct.service(name="public", cpus=0.25, min_replicas=1, auth=False)
    def public() -> dict[str, Any]:
        return {}

    @public.endpoint("/hello")
    def hello(name: str) -> str:
        return f"hello {name}"

    with ct.deploy(public)() as d:
        assert d.token is None and not d.auth
        r = http.post(f"{d.url}/hello", json={"name": "Ada"})
        assert (r.status_code, r.json()) == (200, "hello Ada")
        listed = {x.name: x for x in ct.list_deployments()}["public"]
        assert "open (no auth)" in repr(listed)
        assert "open (no auth)" in listed._repr_html_()
        rows = home.cli("deployments", "list").stdout.splitlines()
        public_row = next(line for line in rows if line.startswith("public "))
        assert "OPEN (no auth)" in public_row
        assert all("OPEN" not in line for line in rows if line.startswith("classifier "))


# -- versions, failures, the decorator, lattices, hardware ------------------------------


def versioned(label: str) -> ct.Service[[]]:
    @ct.service(name="versioned", cpus=0.25, min_replicas=1, max_replicas=1)
    def versioned_init() -> dict[str, Any]:
        return {}

    @versioned_init.endpoint("/which")
    def which() -> str:
        return label

    return versioned_init


def test_redeploying_under_the_same_name_keeps_url_and_token_and_serves_the_new_code(
    home: ControllerHome,
) -> None:
    with ct.deploy(versioned("v1"))() as one:
        assert one.which() == "v1"
        before = rpc_get("versioned")
        two = ct.deploy(versioned("v2"))()
        after = rpc_get("versioned")
        assert (two.url, two.token) == (one.url, one.token)
        assert after.version == before.version + 1
        wait_for(lambda: one.which() == "v2", what="the new version to serve")
        wait_for(
            lambda: {r.version for r in rpc_get("versioned").replicas} == {after.version},
            what="the old replica to stop",
        )
        assert [one.which() for _ in range(3)] == ["v2"] * 3


@ct.service(name="doomed", cpus=0.25, min_replicas=1)
def doomed(path: str) -> dict[str, Any]:
    raise FileNotFoundError(f"no weights at {path}")


@doomed.endpoint("/never")
def never() -> None:
    return None


def test_a_failing_initializer_raises_deployment_error_with_the_remote_traceback(
    home: ControllerHome,
) -> None:
    with pytest.raises(ct.DeploymentError, match="no weights at /models/x") as caught:
        ct.deploy(doomed)("/models/x")
    remote = caught.value.remote_traceback
    assert "Traceback" in remote
    assert "FileNotFoundError: no weights at /models/x" in remote
    assert "doomed" in remote  # the initializer's frame
    with ct.get_deployment("doomed") as failed:
        assert failed.status == "failed"


def test_the_decorator_deploys_a_plain_function_and_calling_the_deployment_calls_it(
    home: ControllerHome,
) -> None:
    @ct.deploy(min_replicas=1, cpus=0.25, name="doubler")
    def double(x: int) -> dict[str, int]:
        return {"double": 2 * x}

    assert isinstance(double, ct.Deployment)
    with double:
        assert double.routes == ["/double"]
        assert double(x=1) == {"double": 2}
        assert double(21) == {"double": 42}
        assert double.double(x=4) == {"double": 8}


@ct.service(name="best-model", cpus=0.25, min_replicas=1)
def best_model(best: int) -> dict[str, Any]:
    return {"best": best}


@best_model.endpoint("/score")
def score(best: int, x: int) -> int:
    return best * x


@ct.electron
def pick_best(candidates: list[int]) -> int:
    return max(candidates)


@ct.lattice
def train_then_deploy(candidates: list[int]) -> ct.Deployment:
    best = pick_best(candidates)
    return ct.deploy(best_model)(best)


def test_a_lattice_deploys_its_best_result_as_its_last_step(home: ControllerHome) -> None:
    result = ct.dispatch_sync(train_then_deploy)([3, 7, 5])
    assert result.status == ct.Status.COMPLETED, result.error
    d = result.result
    assert isinstance(d, ct.Deployment)
    with d:
        assert d.name == "best-model" and d.token
        assert d.score(x=2) == 14


def test_a_replica_gets_the_emulated_gpu_its_spec_asks_for(home: ControllerHome) -> None:
    emulator = ct.LocalExecutor(name="h100-emulator", emulate_gpus={"h100": 1}, workers=1)

    @ct.service(name="gpu-probe", gpu="h100", cpus=0.25, min_replicas=1, executor=emulator)
    def gpu_probe() -> dict[str, Any]:
        return {}

    @gpu_probe.endpoint("/env")
    def env() -> dict[str, str | None]:
        keys = ("COBALT_GPU_TYPE", "COBALT_GPUS_EMULATED", "COBALT_DEPLOYMENT")
        return {k: os.environ.get(k) for k in keys}

    with ct.deploy(gpu_probe)() as d:
        assert d.env() == {
            "COBALT_GPU_TYPE": "h100",
            "COBALT_GPUS_EMULATED": "1",
            "COBALT_DEPLOYMENT": "gpu-probe",
        }
        msg = rpc_get("gpu-probe")
        assert msg.emulated
        (replica,) = msg.replicas
        given = replica.hardware_given
        assert (given.gpu, list(given.gpu_indices), given.emulated) == ("h100", [0], True)
        assert given.cpus == 0.25
        assert replica.executor == "h100-emulator"
        row = next(
            line
            for line in home.cli("deployments", "list").stdout.splitlines()
            if line.startswith("gpu-probe ")
        )
        assert "(emulated)" in row
