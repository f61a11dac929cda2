"""The Dask executor's options are checked when it is built, the hardware its
agents declare follows each worker, and cobalt loads without Dask installed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from cobalt_common.errors import SpecError
from cobalt_executors.dask import DaskExecutor
from cobalt_executors.dask._executor import import_distributed
from cobalt_executors.dask._workers import WorkerShape, gpu_resources
from cobalt_executors.registry import create_executor

ADDRESS = "tcp://127.0.0.1:8786"


def test_the_registry_builds_a_dask_executor_from_its_options() -> None:
    executor = create_executor(
        "dask", "cluster", {"address": ADDRESS, "gpu_resources": {"H100": "GPU"}}
    )
    assert isinstance(executor, DaskExecutor)
    assert dict(executor.gpu_resources) == {"h100": "GPU"}


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({}, "address must be the Dask scheduler's address"),
        ({"address": "127.0.0.1:8786"}, "address must be"),
        ({"address": ADDRESS, "gpu_resources": ["GPU"]}, "gpu_resources="),
        ({"address": ADDRESS, "gpu_resources": {"h100": "G P U"}}, "name of a Dask worker"),
        ({"address": ADDRESS, "gpu_resources": {"h100": "GPU", "a100": "GPU"}}, "two GPU"),
        ({"address": ADDRESS, "emulate_gpus": "yes"}, "emulate_gpus must be true or false"),
        ({"address": ADDRESS, "workers": -1}, "workers must be a whole number"),
        ({"address": ADDRESS, "connect_timeout_s": 0}, "connect_timeout_s must be a positive"),
        ({"address": ADDRESS, "hosts": []}, "hosts"),
    ],
)
def test_a_wrong_option_is_refused_with_what_is_accepted(
    options: dict[str, object], match: str
) -> None:
    with pytest.raises(SpecError, match=match):
        DaskExecutor("cluster", options)


def test_a_worker_offers_its_threads_memory_limit_and_named_gpu_resources() -> None:
    table = gpu_resources({"h100": "GPU", "l4": "L4"}, executor="cluster")
    info = {"nthreads": 8, "memory_limit": 16 * 2**30, "resources": {"GPU": 2, "disk": 1}}
    shape = WorkerShape.of("tcp://10.0.0.5:4000", info, table)
    assert (shape.cpus, shape.memory_mb, shape.gpus) == (8, 16384, {"h100": 2})
    inventory = shape.inventory()
    assert [(d.index, d.type, d.emulated) for d in inventory.gpus] == [
        (0, "h100", True),
        (1, "h100", True),
    ]
    unlimited = WorkerShape.of("tcp://10.0.0.6:4000", {"nthreads": 1, "memory_limit": 0}, table)
    assert unlimited.memory_mb == 0 and "no memory limit" in unlimited.describe()


def test_cobalt_loads_its_executors_without_importing_dask() -> None:
    code = (
        "import sys, cobalt, cobalt_executors.registry\n"
        "assert 'distributed' not in sys.modules, 'distributed was imported'\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr


def test_without_the_dask_extra_setup_says_which_extra_to_install(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(SpecError, match=r"cobalt\[dask\]"):
        import_distributed("cluster")
