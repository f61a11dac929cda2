"""``@ct.service``, ``@svc.endpoint`` and ``ct.deploy``: options checked where they are written."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import cloudpickle
import pytest

import cobalt as ct
from cobalt._deploy import DeployTask, build_create_request
from cobalt._graph import NodeKind
from cobalt._runtime.replica import ReplicaEntry
from cobalt_common.deploy import Manifest, Route

pytestmark = pytest.mark.unit


def echo(model: str, text: str) -> str:
    return text


def make(**options: Any) -> ct.Service[[]]:
    def load_model() -> dict[str, Any]:
        return {"model": "m"}

    return ct.service(**options)(load_model)


def test_the_default_name_is_the_initializers_name_with_dashes() -> None:
    assert make().name == "load-model"


def test_a_bare_service_decorator_works_and_keeps_the_initializer_callable() -> None:
    @ct.service
    def classifier(size: str) -> dict[str, str]:
        return {"size": size}

    assert isinstance(classifier, ct.Service)
    assert classifier("small") == {"size": "small"}
    assert classifier.__name__ == "classifier"


def test_the_manifest_holds_routes_autoscaling_auth_and_body_limit() -> None:
    svc = make(name="clf", auth=False, max_body_bytes=1024, max_replicas=8)

    @svc.endpoint("/predict")
    def predict(model: str, text: str) -> dict[str, str]:
        return {"label": text}

    @svc.endpoint("/stream", streaming=True)
    def stream(text: str) -> Iterator[str]:
        yield text

    manifest = svc.manifest()
    assert manifest.routes == (
        Route("predict", "/predict", False),
        Route("stream", "/stream", True),
    )
    assert (manifest.auth, manifest.max_body_bytes, manifest.autoscaling.max_replicas) == (
        False,
        1024,
        8,
    )
    assert Manifest.from_json(manifest.to_json()) == manifest
    assert predict("m", "hi") == {"label": "hi"}


def test_shorthand_keywords_are_laid_over_autoscaling() -> None:
    base = ct.Autoscaling(min_replicas=1, max_replicas=4, target_concurrency=2, utilization=0.5)
    merged = make(autoscaling=base, max_replicas=10, target_concurrency=5, scaledown_window="2m")
    a = merged.autoscaling
    assert (a.min_replicas, a.max_replicas, a.target_concurrency) == (1, 10, 5)
    assert (a.utilization, a.seconds("scaledown_window")) == (0.5, 120.0)
    assert a.max_concurrency == 10  # derived again from the new target


def test_shorthand_keywords_alone_make_the_autoscaling() -> None:
    a = make(min_replicas=2, max_replicas=3).autoscaling
    assert (a.min_replicas, a.max_replicas) == (2, 3)


def test_shorthands_that_contradict_each_other_fail_at_decoration() -> None:
    with pytest.raises(ct.SpecError, match=r"min_replicas=5.*above max_replicas=2"):
        make(min_replicas=5, max_replicas=2)


def test_hardware_options_are_parsed_like_an_electrons() -> None:
    svc = make(gpu="h100", gpus=2, cpus=8, memory="32GB")
    assert svc.hardware().describe() == "2x H100, 8 CPUs, 32 GB"
    assert make().hardware().describe() == "1 CPU"


@pytest.mark.parametrize(
    ("options", "words"),
    [
        ({"time_limit": "1h"}, "does not take time_limit=: a service runs until it is torn down"),
        ({"retries": 2}, "does not take retries="),
        ({"gpux": "h100"}, "unknown option 'gpux'. Did you mean gpu=?"),
        ({"gpu": "h900"}, "h900"),
        ({"memory": "lots"}, "memory"),
        ({"name": "Bad_Name"}, "deployment name 'Bad_Name' is not valid"),
        ({"auth": "yes"}, "auth='yes' must be True or False"),
        ({"max_body_bytes": 0}, "max_body_bytes=0"),
        ({"autoscaling": {"min_replicas": 1}}, "autoscaling= takes ct.Autoscaling"),
        ({"gpus": 2}, "no GPU type is set"),
    ],
)
def test_invalid_options_fail_at_decoration_with_a_clear_message(
    options: dict[str, Any], words: str
) -> None:
    with pytest.raises(ct.SpecError, match=None) as info:
        make(**options)
    assert words in str(info.value)


def test_a_positional_option_gets_a_suggestion() -> None:
    with pytest.raises(ct.SpecError, match=r'Did you mean @ct.service\(gpu="h100"\)'):
        ct.service("h100")  # type: ignore[call-overload]


def test_a_service_given_something_else_lists_its_options() -> None:
    with pytest.raises(ct.SpecError, match="Accepted options: name, auth, autoscaling"):
        ct.service(3)  # type: ignore[call-overload]


def test_an_endpoint_without_a_path_suggests_one() -> None:
    svc = make()
    with pytest.raises(ct.SpecError, match=r'Did you mean @load_model.endpoint\("/predict"\)'):

        @svc.endpoint  # type: ignore[arg-type]
        def predict(text: str) -> str:
            return text


@pytest.mark.parametrize("path", ["predict", "/a//b", "/../x", "/sp ace"])
def test_invalid_paths_are_refused(path: str) -> None:
    with pytest.raises(ct.SpecError, match="is not valid"):
        make().endpoint(path)(lambda: 1)


def test_two_endpoints_on_one_path_or_with_one_name_are_refused() -> None:
    svc = make()

    def first() -> int:
        return 1

    svc.endpoint("/a")(first)
    with pytest.raises(ct.SpecError, match="already serves first at '/a'"):
        svc.endpoint("/a")(echo)
    with pytest.raises(ct.SpecError, match="already has an endpoint named 'first'"):
        svc.endpoint("/b")(first)


def test_a_generator_must_be_marked_streaming() -> None:
    def tokens() -> Iterator[str]:
        yield "a"

    with pytest.raises(ct.SpecError, match="streaming=True"):
        make().endpoint("/tokens")(tokens)


def test_signatures_a_json_body_cannot_fill_are_refused() -> None:
    def positional(a: int, /) -> int:
        return a

    def star(*items: int) -> int:
        return 0

    with pytest.raises(ct.SpecError, match="positional-only"):
        make().endpoint("/p")(positional)
    with pytest.raises(ct.SpecError, match=r"\*items cannot be filled"):
        make().endpoint("/s")(star)


def test_a_service_without_endpoints_cannot_be_deployed() -> None:
    with pytest.raises(ct.SpecError, match="has no endpoints"):
        make().manifest()


def test_deploy_takes_only_wait_and_timeout_for_a_service() -> None:
    svc = make()
    with pytest.raises(ct.SpecError, match="takes only wait= and timeout="):
        ct.deploy(svc, gpu="h100")
    with pytest.raises(ct.SpecError, match="timeout=0"):
        ct.deploy(svc, timeout=0)


def test_deploy_as_a_decorator_validates_its_options_before_deploying() -> None:
    with pytest.raises(ct.SpecError, match="time_limit"):
        ct.deploy(time_limit="1h")  # type: ignore[call-overload]
    with pytest.raises(ct.SpecError, match=r"ct\.deploy takes a @ct\.service or a function"):
        ct.deploy(42)  # type: ignore[call-overload]


def test_the_create_request_carries_manifest_hardware_executor_and_pickled_arguments() -> None:
    svc = make(name="clf", gpu="l4", executor="gpu")

    @svc.endpoint("/predict")
    def predict(model: str, text: str) -> str:
        return text

    req, large = build_create_request(svc, ["small"], {"big": b"x" * 100_000})
    assert req.name == "clf"
    assert json.loads(req.manifest_json)["routes"][0]["path"] == "/predict"
    assert (req.hardware.gpu, req.hardware.gpus, req.executor.name) == ("l4", 1, "gpu")
    assert [(a.position, a.keyword) for a in req.args] == [(0, ""), (-1, "big")]
    assert set(large) == {req.args[1].sha256}
    inline = {p.sha256: p.data for p in req.payloads}
    entry = cloudpickle.loads(inline[req.service_sha256])
    assert isinstance(entry, ReplicaEntry)
    assert entry.service.name == "clf"
    assert cloudpickle.loads(inline[req.args[0].sha256]) == "small"


def test_deploy_inside_a_lattice_records_a_deploy_task() -> None:
    svc = make(name="clf")
    svc.endpoint("/predict")(echo)

    @ct.lattice
    def flow(size: str) -> ct.Deployment:
        return ct.deploy(svc)(*[])  # the initializer takes no arguments

    graph = flow.build_graph("small")
    node = graph.nodes[graph.output]
    assert (node.kind, node.name) == (NodeKind.ELECTRON, "deploy clf")
    assert isinstance(node.function, DeployTask)
    assert node.options.hardware.cpus == 0
    cloudpickle.loads(cloudpickle.dumps(node.function))


def test_deploy_inside_a_lattice_checks_the_initializers_arguments() -> None:
    svc = make(name="clf")
    svc.endpoint("/predict")(echo)

    @ct.lattice
    def flow() -> ct.Deployment:
        return ct.deploy(svc)("unexpected")  # type: ignore[call-arg]

    with pytest.raises(ct.GraphError, match="service 'clf' cannot be called"):
        flow.build_graph()
