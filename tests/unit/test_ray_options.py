"""The Ray executor's options are checked where they are written, and a Ray node's
resources become the hardware its agent offers."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import pytest

from cobalt_common.errors import ExecutorError, SpecError
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.base import AgentEndpoint, ExecutorContext
from cobalt_executors.ray import RayExecutor
from cobalt_executors.ray._nodes import NodeShape, gpu_resources
from cobalt_executors.registry import create_executor

pytestmark = pytest.mark.unit

GIB = 2**30


def test_the_registry_builds_a_ray_executor_and_refuses_an_unknown_option() -> None:
    executor = create_executor("ray", "cluster", {"address": "10.0.0.5:6379"})
    assert isinstance(executor, RayExecutor)
    with pytest.raises(SpecError, match="accepted options are"):
        create_executor("ray", "cluster", {"address": "10.0.0.5:6379", "num_cpus": 4})


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "address must be the Ray cluster's address"),
        ({"address": ""}, "address must be"),
        ({"address": "a:1", "token_file": 3}, "token_file must be a path"),
        ({"address": "a:1", "gpu_resources": ["GPU"]}, "must be a table"),
        ({"address": "a:1", "gpu_resources": {"l4": "GPU L4"}}, "must be a Ray resource name"),
        ({"address": "a:1", "gpu_resources": {"l4": "CPU"}}, "cannot be Ray's 'CPU'"),
        ({"address": "a:1", "python": "a\nb"}, "python must be a path"),
    ],
)
def test_a_bad_option_is_refused_with_what_is_expected(options: dict[str, Any], match: str) -> None:
    with pytest.raises(SpecError, match=match):
        RayExecutor("cluster", options)


def test_a_custom_gpu_resource_is_offered_as_emulated_gpus_of_the_cobalt_name() -> None:
    table = gpu_resources({"L4": "GPU_L4"})
    shape = NodeShape.of("n", {"CPU": 4.0, "memory": 8.0 * GIB, "GPU_L4": 2.0}, table)
    assert (shape.cpus, shape.memory_mb, shape.gpu, shape.gpus) == (4.0, 8192, "l4", 2)
    assert shape.emulated and shape.ray_resources() == {"GPU_L4": 2.0}
    assert shape.covers(HardwareSpec(cpus=4, memory_mb=8192, gpu="l4", gpus=2))
    assert not shape.covers(HardwareSpec(gpu="l4", gpus=3))
    assert not shape.covers(HardwareSpec(gpu="h100", gpus=1))
    assert not shape.covers(HardwareSpec(cpus=5))


def test_ray_s_own_gpus_are_found_by_their_accelerator_type_and_are_not_emulated() -> None:
    resources = {"CPU": 8.0, "memory": 64.0 * GIB, "GPU": 4.0, "accelerator_type:H100": 1.0}
    shape = NodeShape.of("n", resources, gpu_resources(None))
    assert (shape.gpu, shape.gpus, shape.gpu_resource) == ("h100", 4, "GPU")
    assert not shape.emulated and shape.ray_resources() == {}


def test_a_node_without_gpus_offers_its_cpus_and_memory_only() -> None:
    shape = NodeShape.of("n", {"CPU": 2.0, "memory": 1.5 * GIB}, gpu_resources({"l4": "GPU_L4"}))
    assert (shape.cpus, shape.memory_mb, shape.gpu, shape.gpus) == (2.0, 1536, None, 0)
    assert shape.describe() == "2 CPUs, 1536 MB"


def test_setup_without_ray_names_the_extra_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "ray" else real(name, *a)
    )
    executor = RayExecutor("cluster", {"address": "10.0.0.5:6379"})
    context = ExecutorContext(
        inline_limit=1024,
        report=lambda _: None,
        agents=AgentEndpoint("127.0.0.1:1", "", lambda *_: "token"),
        work_dir=tmp_path,
    )
    with pytest.raises(ExecutorError, match=r"cobalt\[ray\]"):
        executor.setup(context)


def test_cobalt_s_executors_import_without_importing_ray() -> None:
    import subprocess
    import sys

    probe = "import sys, cobalt_executors.registry; print('ray' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "False", done.stderr


def test_a_share_of_a_node_holds_whole_gpus_and_none_when_too_few() -> None:
    node = NodeShape("n", 8.0, 16384, "l4", 2, "GPU_L4")
    assert node.share(2) == NodeShape("n", 4.0, 8192, "l4", 1, "GPU_L4")
    assert node.share(4) == NodeShape("n", 2.0, 4096, None, 0, "")
    assert node.share(1) is node


@pytest.mark.parametrize("value", [0, 65, 1.5, True, "2"])
def test_agents_per_node_must_be_a_whole_number_from_1_to_64(value: object) -> None:
    with pytest.raises(SpecError, match="agents_per_node must be a whole number"):
        RayExecutor("cluster", {"address": "a:1", "agents_per_node": value})
