"""Covalent's executor classes (``ct.executor.SlurmExecutor(...)`` and kin) map each
argument to what cobalt does with it, and refuse what cobalt cannot honour.

A cluster descriptor sends no options: it is a match among the controller's
configured executors, so a client never points the controller at its own hosts.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import cobalt as ct
from cobalt._runtime.task import TaskCallable
from cobalt._submit import executor_ref
from cobalt.executor import DaskExecutor, KubernetesExecutor, SlurmExecutor, SSHExecutor
from cobalt_controller._config import ExecutorConfig
from cobalt_controller._executor_match import describe, parse_match, select

pytestmark = pytest.mark.unit


def test_the_executor_module_is_public_and_shares_the_local_executor() -> None:
    import cobalt.executor

    assert ct.executor is cobalt.executor
    assert ct.executor.LocalExecutor is ct.LocalExecutor
    assert set(cobalt.executor.__all__) >= {
        "LocalExecutor",
        "DaskExecutor",
        "SlurmExecutor",
        "SSHExecutor",
        "KubernetesExecutor",
    }
    assert repr(DaskExecutor()).startswith("DaskExecutor(")
    assert DaskExecutor.__module__ == "cobalt.executor"


def test_slurm_arguments_become_a_match_and_the_tasks_hardware_defaults() -> None:
    ex = SlurmExecutor(
        username="alice",
        address="login.hpc.example",
        ssh_key_file="~/.ssh/id_rsa",
        remote_workdir="/scratch/alice",
        poll_freq=60,
        cleanup=True,
        cache_dir="/tmp/covalent",
        options={
            "partition": "gpu",
            "account": "proj1",
            "cpus-per-task": 4,
            "mem": "16G",
            "gres": "gpu:h100:2",
            "time": "1-02:00:00",
            "parsable": "",
            "nodes": 1,
        },
        log_stdout="out.log",
    )
    assert ex.options == {}, "a cluster descriptor sends no options the controller would act on"
    assert ex.match == {"address": "login.hpc.example", "partition": "gpu", "account": "proj1"}
    assert ex.defaults == {
        "cpus": 4.0,
        "memory": 16384,
        "gpu": "h100",
        "gpus": 2,
        "time_limit": 26 * 3600.0,
    }
    assert ex.settings.workdir == "/scratch/alice"
    assert ex.settings.log_stdout == "out.log"


@pytest.mark.parametrize(
    ("value", "seconds"),
    [("30", 1800), (45, 2700), ("10:30", 630), ("2:00:00", 7200), ("1-12", 129600)],
)
def test_slurm_times_read_as_slurm_reads_them(value: Any, seconds: float) -> None:
    assert SlurmExecutor(options={"time": value}).defaults["time_limit"] == seconds


@pytest.mark.parametrize(
    ("value", "mb"), [(4096, 4096), ("4096", 4096), ("2G", 2048), ("512M", 512), ("1T", 1 << 20)]
)
def test_slurm_memory_reads_as_slurm_reads_it(value: Any, mb: int) -> None:
    assert SlurmExecutor(options={"mem": value}).defaults["memory"] == mb


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"options": {"gres": "gpu:2"}}, "gres"),
        ({"options": {"gres": "gpu:tpu9:1"}}, "gres"),
        ({"options": {"mem": "lots"}}, "mem"),
        ({"options": {"time": "soon"}}, "time"),
        ({"options": {"cpus-per-task": 0}}, "cpus-per-task"),
        ({"options": {"nodes": 2}}, "nodes"),
        ({"options": {"exclusive": ""}}, "exclusive"),
        ({"options": "partition=gpu"}, "options"),
        ({"conda_env": "ml"}, "conda_env"),
        ({"variables": {"A": "1"}}, "variables"),
        ({"prerun_commands": ["module load cuda"]}, "prerun_commands"),
        ({"postrun_commands": ["rm -rf x"]}, "postrun_commands"),
        ({"srun_options": {"cpu-bind": "cores"}}, "srun_options"),
        ({"create_unique_workdir": True}, "create_unique_workdir"),
        ({"address": 42}, "address"),
        ({"time_limit": 0}, "time_limit"),
        ({"retries": -1}, "retries"),
    ],
)
def test_slurm_refuses_what_cobalt_cannot_honour_naming_the_argument(
    kwargs: dict[str, Any], named: str
) -> None:
    with pytest.raises(ct.SpecError, match=named):
        SlurmExecutor(**kwargs)


def test_dask_ssh_and_kubernetes_arguments_map_to_matches_and_defaults() -> None:
    dask = DaskExecutor(scheduler_address="tcp://10.0.0.5:8786", workdir="/tmp/w", retries=2)
    assert dask.match == {"address": "tcp://10.0.0.5:8786"}
    assert dask.defaults == {"retries": 2} and dask.settings.workdir == "/tmp/w"
    assert DaskExecutor().match == {}, "no address: the sole Dask executor"

    ssh = SSHExecutor(
        username="me", hostname="gpu1.lab", ssh_key_file="~/.ssh/k", python_path="/opt/py"
    )
    assert ssh.match == {"hostname": "gpu1.lab"} and ssh.options == {}

    k8s = KubernetesExecutor(
        k8s_context="kind-dev",
        k8s_config_file="~/.kube/config",
        base_image="python:3.11",
        vcpu="1500m",
        memory="512Mi",
        registry="localhost",
        poll_freq=10,
    )
    assert k8s.match == {
        "context": "kind-dev",
        "kubeconfig": "~/.kube/config",
        "image": "python:3.11",
    }
    assert k8s.defaults == {"cpus": 1.5, "memory": 512}
    assert KubernetesExecutor(vcpu=2, memory="2Gi").defaults == {"cpus": 2.0, "memory": 2048}


@pytest.mark.parametrize(
    ("build", "named"),
    [
        (lambda: DaskExecutor(conda_env="ml"), "conda_env"),
        (lambda: DaskExecutor(scheduler_address=["tcp://x:1"]), "scheduler_address"),
        (lambda: SSHExecutor(hostname="h", run_local_on_ssh_fail=True), "run_local_on_ssh_fail"),
        (lambda: SSHExecutor(hostname="h", conda_env="ml"), "conda_env"),
        (lambda: KubernetesExecutor(vcpu="lots"), "vcpu"),
        (lambda: KubernetesExecutor(memory="-1Gi"), "memory"),
        (lambda: ct.executor.LocalExecutor(log_stdout=3), "log_stdout"),
        (lambda: ct.executor.LocalExecutor(conda_env="ml"), "conda_env"),
        (lambda: ct.executor.LocalExecutor(workers=0), "workers"),
    ],
)
def test_bad_values_are_refused_naming_the_argument(build: Any, named: str) -> None:
    with pytest.raises(ct.SpecError, match=named):
        build()


def test_the_local_executor_takes_covalents_arguments_without_changing_its_name() -> None:
    ex = ct.executor.LocalExecutor(
        workdir="/tmp/wd",
        log_stdout="o.log",
        log_stderr="e.log",
        cache_dir="/tmp/c",
        current_env_on_conda_fail=False,
        time_limit=60,
    )
    assert ex.name == "local" and ex.options == {}
    assert (ex.settings.workdir, ex.settings.log_stdout, ex.settings.log_stderr) == (
        "/tmp/wd",
        "o.log",
        "e.log",
    )
    assert ex.defaults == {"time_limit": 60.0}
    assert ex != ct.LocalExecutor(), "descriptors that run tasks differently are not equal"


def test_executor_defaults_fill_only_what_the_electron_and_lattice_leave_unset() -> None:
    slurm = SlurmExecutor(options={"cpus-per-task": 8, "mem": "4G", "gres": "gpu:a100:2"})

    @ct.electron(executor=slurm)
    def plain() -> None: ...

    @ct.electron(executor=slurm, cpus=2, gpu="h100")
    def own() -> None: ...

    @ct.electron(executor=slurm, gpu=None)
    def no_gpu() -> None: ...

    spec = plain.hardware()
    assert (spec.cpus, spec.memory_mb, spec.gpu, spec.gpus) == (8, 4096, "a100-40gb", 2)
    spec = own.hardware()
    assert (spec.cpus, spec.memory_mb, spec.gpu, spec.gpus) == (2, 4096, "h100", 1)
    assert no_gpu.hardware().gpu is None and no_gpu.hardware().gpus == 0

    from cobalt._options import parse_options

    timed = DaskExecutor(time_limit=90, retries=2)
    options = parse_options("electron 'e'", {"executor": timed}).task_options()
    assert (options.retries, options.hardware.time_limit_s) == (2, 90.0)
    own_retries = parse_options("electron 'e'", {"executor": timed, "retries": 0}).task_options()
    assert own_retries.retries == 0, "the electron's own retries=0 wins over the executor's"


def test_a_descriptor_is_sent_as_a_match_and_a_type_name_as_a_plain_name() -> None:
    ref = executor_ref(DaskExecutor(scheduler_address="tcp://h:1"))
    assert ref is not None
    assert (ref.name, ref.type, json.loads(ref.match_json)) == (
        "dask",
        "dask",
        {"address": "tcp://h:1"},
    )
    local = executor_ref(ct.LocalExecutor(log_stdout="x"))
    assert local is not None and local.match_json == "" and local.options_json == "{}"
    named = executor_ref("dask")
    assert named is not None and (named.name, named.type, named.match_json) == ("dask", "", "")


def test_a_task_runs_in_its_workdir(tmp_path: Any) -> None:
    import os

    here = os.getcwd()
    where = tmp_path / "made" / "here"
    try:
        assert TaskCallable(os.getcwd, workdir=str(where))() == str(where)
    finally:
        os.chdir(here)


CONFIGS = [
    ExecutorConfig("local", "local", {}),
    ExecutorConfig("lab-dask", "dask", {"address": "tcp://10.0.0.5:8786"}),
    ExecutorConfig("login.hpc.example", "slurm", {"partition": "gpu"}),
    ExecutorConfig("cpu-slurm", "slurm", {"partition": "cpu"}),
    ExecutorConfig("lab", "ssh", {"hosts": [{"host": "gpu1.lab"}, {"host": "gpu2.lab"}]}),
]


@pytest.mark.parametrize(
    ("type_name", "match", "chosen"),
    [
        ("dask", {}, "lab-dask"),
        ("dask", {"address": "tcp://10.0.0.5:8786"}, "lab-dask"),
        ("dask", {"address": "10.0.0.5:8786/"}, "lab-dask"),
        ("slurm", {"address": "login.hpc.example"}, "login.hpc.example"),
        ("slurm", {"partition": "cpu"}, "cpu-slurm"),
        ("ssh", {"hostname": "gpu2.lab"}, "lab"),
    ],
)
def test_the_controller_picks_the_configured_executor_a_match_names(
    type_name: str, match: dict[str, str], chosen: str
) -> None:
    assert select(CONFIGS, type_name, match, describe(type_name, match)) == chosen


def test_a_match_naming_an_unconfigured_place_fails_with_the_table_to_add() -> None:
    match = {"address": "tcp://evil.example:8786"}
    with pytest.raises(ct.UnsatisfiableError) as caught:
        select(CONFIGS, "dask", match, describe("dask", match))
    message = str(caught.value)
    assert "matches no executor" in message and "lab-dask" in message
    assert 'type = "dask"\naddress = "tcp://evil.example:8786"' in message
    match = {"address": "other.hpc", "partition": "gpu"}
    with pytest.raises(ct.UnsatisfiableError, match=r'\[executors\."other.hpc"\]\ntype = "slurm"'):
        select(CONFIGS, "slurm", match, describe("slurm", match))


def test_a_type_with_several_executors_must_be_named() -> None:
    several = r"several .*\(login\.hpc\.example, cpu-slurm\)"
    with pytest.raises(ct.UnsatisfiableError, match=several):
        select(CONFIGS, "slurm", {}, describe("slurm", {}))
    with pytest.raises(ct.UnsatisfiableError, match='executor="kubernetes" matches no executor'):
        select(CONFIGS, "kubernetes", {}, describe("kubernetes", {}))


@pytest.mark.parametrize(
    ("type_name", "match_json"),
    [
        ("dask", "not json"),
        ("dask", '{"address": 5}'),
        ("dask", '{"hosts": "x"}'),
        ("dask", '["tcp://x:1"]'),
        ("local", "{}"),
        ("agents", "{}"),
    ],
)
def test_a_malformed_match_from_the_wire_is_refused(type_name: str, match_json: str) -> None:
    with pytest.raises(ct.SpecError):
        parse_match(type_name, match_json)


@pytest.mark.parametrize(
    "options",
    [
        {"address": "tcp://attacker.example:8786"},
        {"hosts": [{"host": "attacker.example"}]},
        {"kubeconfig": "/home/ops/.kube/config"},
    ],
)
def test_the_controller_refuses_a_hand_made_descriptor_that_names_a_place(
    options: dict[str, Any],
) -> None:
    from cobalt_controller._executors import ExecutorPool
    from cobalt_executors.base import ExecutorContext

    pool = ExecutorPool([], ExecutorContext(inline_limit=1, report=lambda outcome: None))
    for type_name in ("dask", "ssh", "kubernetes"):
        ref = {"name": "mine", "type": type_name, "options_json": json.dumps(options)}
        with pytest.raises(ct.SpecError, match=r"only the controller.s config\.toml can"):
            pool.resolve(json.dumps(ref))
    assert pool.all() == []
