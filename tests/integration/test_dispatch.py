"""Workflows dispatched to a real controller with real workers, over gRPC on loopback."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from support import wait_for

import cobalt as ct

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]


@dataclasses.dataclass
class Model:
    name: str
    scores: dict[str, float]


@ct.electron
def square(x: int) -> int:
    return x * x


@ct.electron
def add_all(values: list[int]) -> int:
    return sum(values)


@ct.electron
def pair(x: int) -> tuple[int, int]:
    return x, x + 1


@ct.electron
def identity(x: Any) -> Any:
    return x


@ct.electron
def make_model(name: str) -> Model:
    return Model(name=name, scores={"accuracy": 0.9, "loss": 0.1})


@ct.lattice
def fan_out_and_reduce(n: int) -> int:
    return add_all([square(i) for i in range(n)])


def _records_by_name(result: ct.Result) -> dict[str, list[ct.TaskRecord]]:
    by_name: dict[str, list[ct.TaskRecord]] = {}
    for task in result.tasks:
        by_name.setdefault(task.name, []).append(task)
    return by_name


# -- results and records ---------------------------------------------------------------


def test_a_fan_out_and_reduce_returns_the_reduced_value() -> None:
    result = ct.dispatch_sync(fan_out_and_reduce)(10)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == sum(i * i for i in range(10))


def test_dispatch_returns_an_id_and_get_result_waits_for_the_result() -> None:
    dispatch_id = ct.dispatch(fan_out_and_reduce)(4)
    assert isinstance(dispatch_id, str) and dispatch_id
    result = ct.get_result(dispatch_id, wait=True)
    assert result.dispatch_id == dispatch_id
    assert result.status == ct.Status.COMPLETED
    assert result.result == 14
    assert ct.get_result(dispatch_id).result == 14, "a finished result reads back without waiting"


def test_a_finished_dispatch_read_back_counts_its_tasks_by_status() -> None:
    dispatch_id = ct.dispatch(fan_out_and_reduce)(4)
    waited = ct.get_result(dispatch_id, wait=True)
    read_back = ct.get_result(dispatch_id)
    for result in (waited, read_back):
        assert result.task_count == 5
        assert result.status_counts == {"COMPLETED": 5}
    assert ct.cancel(dispatch_id).status_counts == {"COMPLETED": 5}


def test_a_result_carries_status_value_error_and_times() -> None:
    before = time.time()
    result = ct.dispatch_sync(fan_out_and_reduce)(3)
    after = time.time()
    assert result.status == ct.Status.COMPLETED
    assert result.result == 5
    assert result.error is None
    assert result.name == "fan_out_and_reduce"
    assert isinstance(result.start_time, datetime) and isinstance(result.end_time, datetime)
    assert before - 1 <= result.start_time.timestamp() <= result.end_time.timestamp() <= after + 1
    assert result.task_count >= len(result.tasks) == 4


def test_each_task_has_a_record_of_what_it_asked_for_got_and_did() -> None:
    result = ct.dispatch_sync(fan_out_and_reduce)(3)
    tasks = result.tasks
    assert [t.name for t in tasks] == ["square", "square", "square", "add_all"]
    assert len({t.node_id for t in tasks}) == 4
    for task in tasks:
        assert task.status == ct.Status.COMPLETED
        assert task.kind == "electron"
        assert task.executor in ("local", "gpu")
        assert task.hardware_requested == ct.HardwareSpec(cpus=1.0)
        assert task.hardware_given.cpus == 1.0
        assert task.hardware_given.gpu is None and not task.emulated
        assert task.start_time is not None and task.end_time is not None
        assert task.start_time <= task.end_time
        assert task.duration_s is not None and 0 <= task.duration_s < 10
        assert task.attempts == 1
        assert task.error == "" and task.stdout == "" and task.stderr == ""
    ends = [t.end_time for t in tasks[:3] if t.end_time is not None]
    reduce_start = tasks[3].start_time
    assert reduce_start is not None and max(ends) <= reduce_start, "add_all waited for its inputs"


def test_get_node_result_gives_a_nodes_output_status_error_and_logs() -> None:
    result = ct.dispatch_sync(fan_out_and_reduce)(3)
    reduce_task = _records_by_name(result)["add_all"][0]
    node = result.get_node_result(reduce_task.node_id)
    assert node["output"] == 5
    assert node["status"] == ct.Status.COMPLETED
    assert node["error"] is None
    assert node["stdout"] == "" and node["stderr"] == ""
    assert node["node_name"] == "add_all"
    assert node["start_time"] == reduce_task.start_time
    assert node["end_time"] == reduce_task.end_time


def test_get_node_result_of_an_unknown_node_is_not_found() -> None:
    result = ct.dispatch_sync(fan_out_and_reduce)(2)
    with pytest.raises(ct.NotFoundError, match="no node 999"):
        result.get_node_result(999)


# -- what a lattice can express ------------------------------------------------------


@ct.lattice
def shapes(n: int) -> dict[str, Any]:
    a, b = pair(n)
    model = make_model("tiny")
    return {
        "literal": 7,
        "unpacked": [a, b],
        "tuple": (square(a), "text", None),
        "nested": {"inner": [identity(model.name), identity(model.scores["accuracy"])]},
        "indexed": identity(pair(10)[1]),
        "whole": model,
    }


def test_literals_nested_outputs_attributes_indexing_and_unpacking_resolve() -> None:
    result = ct.dispatch_sync(shapes)(3)
    assert result.status == ct.Status.COMPLETED, result.error
    value = result.result
    whole = value.pop("whole")
    assert value == {
        "literal": 7,
        "unpacked": [3, 4],
        "tuple": (9, "text", None),
        "nested": {"inner": ["tiny", 0.9]},
        "indexed": 11,
    }
    assert (whole.name, whole.scores) == ("tiny", {"accuracy": 0.9, "loss": 0.1})


@ct.electron
def write_after(path: str, delay: float) -> str:
    time.sleep(delay)
    Path(path).write_text("written")
    return "wrote"


@ct.electron
def read_file(path: str) -> str:
    return Path(path).read_text() if Path(path).exists() else "missing"


@ct.lattice
def ordered(path: str) -> list[str]:
    first = write_after(path, 0.3)
    second = read_file(path)
    ct.wait(second, first)
    return [first, second]


def test_ct_wait_starts_a_task_only_after_the_tasks_it_waits_for(tmp_path: Path) -> None:
    result = ct.dispatch_sync(ordered)(str(tmp_path / "marker"))
    assert result.result == ["wrote", "written"]
    first, second = result.tasks
    assert first.end_time is not None and second.start_time is not None
    assert second.start_time >= first.end_time


@ct.lattice
def inner(x: int) -> int:
    return add_all([square(x), square(x + 1)])


inner_task = ct.electron(inner)


@ct.electron
@ct.lattice
def inner_decorated(x: int) -> int:
    return square(x)


@ct.lattice
def outer(x: int) -> int:
    return add_all([inner_task(x), inner_decorated(x)])


def test_sublattices_in_both_forms_run_as_child_dispatches() -> None:
    result = ct.dispatch_sync(outer)(2)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == (4 + 9) + 4
    subs = [t for t in result.tasks if t.kind == "sublattice"]
    assert len(subs) == 2
    for sub in subs:
        assert sub.status == ct.Status.COMPLETED
        child = ct.get_result(sub.sublattice_dispatch_id)
        assert child.status == ct.Status.COMPLETED
    children = {ct.get_result(s.sublattice_dispatch_id).result for s in subs}
    assert children == {13, 4}


def load_settings(scale: int) -> dict[str, int]:
    return {"scale": scale}


@ct.electron(call_before=[ct.DepsCall(load_settings, args=[3], retval_keyword="settings")])
def scaled(x: int, settings: dict[str, int]) -> int:
    return x * settings["scale"]


@ct.lattice
def scaled_flow(x: int) -> int:
    return scaled(x)  # type: ignore[call-arg]  # settings comes from the DepsCall


def test_deps_call_passes_its_return_value_under_retval_keyword() -> None:
    assert ct.dispatch_sync(scaled_flow)(5).result == 15


def test_deps_bash_runs_before_the_task_on_the_worker(tmp_path: Path) -> None:
    marker = tmp_path / "touched"

    @ct.electron(deps_bash=ct.DepsBash(f"touch {marker}"))
    def sees_marker() -> bool:
        return marker.exists()

    @ct.lattice
    def flow() -> bool:
        return sees_marker()

    result = ct.dispatch_sync(flow)()
    assert result.result is True, result.error
    assert marker.exists()


def append_line(path: str, line: str) -> None:
    with open(path, "a") as file:
        file.write(line + "\n")


def test_call_after_runs_after_the_task_returns(tmp_path: Path) -> None:
    log = str(tmp_path / "log")

    @ct.electron(call_after=[ct.DepsCall(append_line, args=[log, "after"])])
    def task() -> int:
        append_line(log, "task")
        return 1

    @ct.lattice
    def flow() -> int:
        return task()

    assert ct.dispatch_sync(flow)().result == 1
    assert Path(log).read_text().splitlines() == ["task", "after"]


def test_electrons_inherit_the_lattices_deps(tmp_path: Path) -> None:
    log = str(tmp_path / "log")

    @ct.electron
    def first() -> int:
        append_line(log, "first")
        return 1

    @ct.electron
    def second(x: int) -> int:
        append_line(log, "second")
        return x + 1

    @ct.lattice(
        deps_bash=f"echo bash >> {log}",
        call_before=[ct.DepsCall(append_line, args=[log, "before"])],
    )
    def flow() -> int:
        return second(first())

    assert ct.dispatch_sync(flow)().result == 2
    lines = Path(log).read_text().splitlines()
    assert lines == ["bash", "before", "first", "bash", "before", "second"]


@ct.electron
def importable(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@ct.lattice
def probe_import(module: str) -> bool:
    return importable(module)


def test_functions_of_a_module_that_is_not_installed_run_on_the_worker() -> None:
    result = ct.dispatch_sync(probe_import)(__name__)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result is False, "the worker cannot import this module, yet runs its functions"


# -- logs ----------------------------------------------------------------------------


@ct.electron
def noisy(tag: str) -> str:
    print(f"print {tag}")
    print(f"stderr {tag}", file=sys.stderr)
    subprocess.run(["echo", f"subprocess {tag}"], check=True)
    os.write(1, f"fd1 {tag}\n".encode())
    return tag


@ct.lattice
def two_noisy() -> list[str]:
    return [noisy("alpha"), noisy("beta")]


def test_each_task_captures_its_own_stdout_and_stderr_including_subprocesses() -> None:
    result = ct.dispatch_sync(two_noisy)()
    assert result.result == ["alpha", "beta"]
    for task, tag, other in zip(result.tasks, ["alpha", "beta"], ["beta", "alpha"], strict=True):
        assert f"print {tag}\n" in task.stdout
        assert f"subprocess {tag}\n" in task.stdout
        assert f"fd1 {tag}\n" in task.stdout
        assert task.stderr == f"stderr {tag}\n"
        assert other not in task.stdout
        node = result.get_node_result(task.node_id)
        assert node["stdout"] == task.stdout and node["stderr"] == task.stderr


# -- hardware ------------------------------------------------------------------------


def test_the_pitch_spec_decorates_and_describes_itself() -> None:
    @ct.electron(gpu="h100", cpus=24, memory="48GB", time_limit="18h")
    def finetune(model_name: str, data: list[int]) -> str:
        return f"{model_name} tuned on {len(data)} rows"

    assert finetune.hardware() == ct.HardwareSpec(
        gpu="h100", gpus=1, cpus=24, memory_mb=48 * 1024, time_limit_s=18 * 3600
    )
    assert finetune.hardware().describe() == "1x H100, 24 CPUs, 48 GB, limit 18h"
    assert finetune("tiny", [1, 2]) == "tiny tuned on 2 rows"


_GPU_ENV = ("COBALT_GPU_TYPE", "COBALT_GPU_INDICES", "COBALT_GPUS_EMULATED", "CUDA_VISIBLE_DEVICES")


@ct.electron(gpu="h100")
def gpu_probe(barrier: str, name: str) -> dict[str, Any]:
    Path(barrier, name).touch()
    deadline = time.time() + 10
    while len(os.listdir(barrier)) < 2 and time.time() < deadline:
        time.sleep(0.01)
    env = {key: os.environ.get(key) for key in _GPU_ENV}
    return {"together": len(os.listdir(barrier)) == 2, **env}


@ct.lattice
def two_gpu_tasks(barrier: str) -> list[dict[str, Any]]:
    return [gpu_probe(barrier, "a"), gpu_probe(barrier, "b")]


def test_concurrent_gpu_tasks_get_distinct_emulated_h100s(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        # The test controller's "local" executor would offer the real GPUs too.
        pytest.skip("a machine with real GPUs: see test_real_gpu.py")
    result = ct.dispatch_sync(two_gpu_tasks)(str(tmp_path))
    assert result.status == ct.Status.COMPLETED, result.error
    seen = result.result
    assert all(s["together"] for s in seen), "both tasks ran at the same time"
    indices = [task.hardware_given.gpu_indices for task in result.tasks]
    assert sorted(indices) == [(0,), (1,)]
    for task, env in zip(result.tasks, seen, strict=True):
        assert task.executor == "gpu"
        assert task.hardware_requested == ct.HardwareSpec(gpu="h100", gpus=1, cpus=1.0)
        assert task.hardware_given.gpu == "h100"
        assert task.hardware_given.emulated and task.emulated
        assert env["COBALT_GPU_TYPE"] == "h100"
        assert env["COBALT_GPU_INDICES"] == ",".join(map(str, task.hardware_given.gpu_indices))
        assert env["COBALT_GPUS_EMULATED"] == "1"
        assert env["CUDA_VISIBLE_DEVICES"] == "", "emulated GPUs make no real device visible"
    assert "H100 80GB (emulated)" in result.task_table()


@ct.electron
def cpu_env() -> dict[str, str | None]:
    return {key: os.environ.get(key) for key in _GPU_ENV}


@ct.lattice
def cpu_env_flow() -> dict[str, str | None]:
    return cpu_env()


def test_a_cpu_task_sees_no_gpu_variables() -> None:
    env = ct.dispatch_sync(cpu_env_flow)().result
    assert env["COBALT_GPU_TYPE"] is None and env["COBALT_GPU_INDICES"] is None
    assert env["CUDA_VISIBLE_DEVICES"] == ""


# -- payloads --------------------------------------------------------------------------


@ct.electron
def digest_and_reverse(data: bytes) -> tuple[str, bytes]:
    return hashlib.sha256(data).hexdigest(), data[::-1]


@ct.lattice
def large_round_trip(data: bytes) -> tuple[str, bytes]:
    return digest_and_reverse(data)


def test_large_arguments_and_outputs_round_trip_through_the_blob_store(
    controller_home: ControllerHome,
) -> None:
    data = os.urandom(5 * 1024 * 1024)
    blobs_before = set((controller_home.path / "blobs").rglob("*"))
    result = ct.dispatch_sync(large_round_trip)(data)
    assert result.status == ct.Status.COMPLETED, result.error
    digest, reversed_data = result.result
    assert digest == hashlib.sha256(data).hexdigest()
    assert reversed_data == data[::-1]
    new_blobs = [
        p for p in set((controller_home.path / "blobs").rglob("*")) - blobs_before if p.is_file()
    ]
    assert len(new_blobs) >= 2, "the argument and the output went to the blob store"
    assert all(p.stat().st_size > 5 * 1024 * 1024 for p in new_blobs)


# -- the controller's life -----------------------------------------------------------


@ct.electron
def slow_start(marker: str, delay: float) -> int:
    Path(marker).write_text(str(os.getpid()))
    time.sleep(delay)
    return 20


@ct.electron
def plus_one(x: int) -> int:
    return x + 1


@ct.lattice
def slow_then_fast(marker: str) -> int:
    return plus_one(slow_start(marker, 1.5))


def test_ct_dispatch_starts_a_controller_when_none_is_running(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home()
    assert home.info() is None
    result = ct.dispatch_sync(fan_out_and_reduce)(3)
    assert result.result == 5
    status = home.cli("controller", "status")
    assert f"(pid {home.pid})" in status.stdout
    assert "gpu" in status.stdout and "2x h100 (emulated)" in status.stdout
    listing = home.cli("dispatches")
    assert result.dispatch_id in listing.stdout and "COMPLETED" in listing.stdout
    pid = home.pid
    began = time.monotonic()
    home.cli("controller", "stop")
    assert time.monotonic() - began < 5, "stop does not wait for a zombie of the controller"
    assert home.info() is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


@pytest.mark.parametrize("stop", ["cli", "sigterm"])
def test_a_dispatch_resumes_after_the_controller_restarts(
    stop: str, make_controller_home: Callable[..., ControllerHome], tmp_path: Path
) -> None:
    home = make_controller_home()
    home.start()
    marker = tmp_path / "started"
    dispatch_id = ct.dispatch(slow_then_fast)(str(marker))
    wait_for(marker.exists, timeout=30)
    if stop == "cli":
        home.cli("controller", "stop")
    else:
        os.kill(home.pid, signal.SIGTERM)
        wait_for(lambda: home.info() is None, timeout=30)
    assert home.info() is None, "the controller stopped and removed its controller.json"
    home.start()
    result = ct.get_result(dispatch_id, wait=60)
    assert result.status == ct.Status.COMPLETED, result.error
    assert result.result == 21
    slow = _records_by_name(result)["slow_start"][0]
    assert slow.status == ct.Status.COMPLETED
    assert slow.attempts >= 2, "the task that was running when the controller stopped ran again"


def test_a_result_in_a_notebook_links_to_its_dashboard_page_without_the_token() -> None:
    result = ct.dispatch_sync(fan_out_and_reduce)(3)
    markup = result._repr_html_()
    link = re.search(r'href="(http://127\.0\.0\.1:\d+/dispatches/([0-9a-f]+))"', markup)
    assert link is not None and link.group(2) == result.dispatch_id, markup[:500]
    assert "token" not in markup
    assert "completed" in markup and "fan_out_and_reduce" in markup


@ct.electron
def read_relative(name: str) -> tuple[str, str]:
    return os.getcwd(), Path(name).read_text()


@ct.lattice
def reads_relative(name: str) -> tuple[str, str]:
    return read_relative(name)


def test_tasks_start_in_the_directory_the_client_dispatched_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for sub in ("first", "second"):
        here = tmp_path / sub
        here.mkdir()
        (here / "data.csv").write_text(f"rows of {sub}")
        monkeypatch.chdir(here)
        cwd, text = ct.dispatch_sync(reads_relative)("data.csv").result
        assert (cwd, text) == (str(here), f"rows of {sub}")
