"""A hardware spec and a Slurm executor's options as sbatch options; what a partition can
ever run; the walltime of a replica's pilot; and how failures of Slurm's commands reach
cobalt (with stand-in commands)."""

from __future__ import annotations

import os
import stat
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from cobalt_common.errors import ConfigError, DispatchError, SpecError, UnsatisfiableError
from cobalt_common.hardware import HardwareSpec
from cobalt_executors import PayloadRef, TaskSubmission
from cobalt_executors.slurm._capacity import Capacity
from cobalt_executors.slurm._cli import SlurmCli
from cobalt_executors.slurm._executor import SlurmExecutor
from cobalt_executors.slurm._parse import NodeInfo, PartitionInfo
from cobalt_executors.slurm._sbatch import SbatchOptions, job_name

pytestmark = pytest.mark.unit

H100 = HardwareSpec(gpu="h100", gpus=1, cpus=1, memory_mb=100)


def test_a_spec_becomes_gres_cpus_mem_and_time() -> None:
    spec = HardwareSpec(gpu="h100", gpus=2, cpus=1.25, memory_mb=4096, time_limit_s=3600)
    assert SbatchOptions().arguments(spec) == [
        "--export=NONE",
        "--gres=gpu:h100:2",
        "--cpus-per-task=2",
        "--mem=4096M",
        "--time=61",
    ]


def test_a_spec_without_gpu_memory_or_limit_asks_for_one_cpu_only() -> None:
    assert SbatchOptions().arguments(HardwareSpec(cpus=0.25)) == [
        "--export=NONE",
        "--cpus-per-task=1",
    ]


def test_gpu_types_map_cobalt_names_to_the_sites_gres_types() -> None:
    options = SbatchOptions.from_options(
        {"gpu_types": {"H100": "h100_80gb", "a100": "", "A100 80GB": "a100.80g"}}
    )
    assert options.gres(H100) == "gpu:h100_80gb:1"
    assert options.gres(HardwareSpec(gpu="a100-40gb", gpus=3)) == "gpu:3"
    assert options.gres(HardwareSpec(gpu="a100-80gb", gpus=1)) == "gpu:a100.80g:1"
    assert options.gres(HardwareSpec(gpu="l4", gpus=1)) == "gpu:l4:1"
    assert options.gres(HardwareSpec()) is None


def test_partition_account_qos_name_and_extra_options_pass_through() -> None:
    options = SbatchOptions.from_options(
        {
            "partition": "gpu",
            "account": "team-a",
            "qos": "high",
            "sbatch_options": ["--constraint=a100&nvlink", "--exclusive"],
        }
    )
    assert options.arguments(HardwareSpec(), name="train (v2)") == [
        "--partition=gpu",
        "--account=team-a",
        "--qos=high",
        "--job-name=cobalt-train_v2",
        "--export=NONE",
        "--cpus-per-task=1",
        "--constraint=a100&nvlink",
        "--exclusive",
    ]


@pytest.mark.parametrize(
    ("limit_s", "margin", "minutes"),
    [
        (1, None, 2),
        (60, 0, 1),
        (61, 0, 2),
        (0.5, 0, 1),
        (3600, "5m", 65),
        (3600, timedelta(seconds=30), 61),
    ],
)
def test_the_time_limit_is_a_backstop_in_whole_minutes_with_a_margin(
    limit_s: float, margin: object, minutes: int
) -> None:
    options = SbatchOptions.from_options({"time_margin": margin})
    assert options.time_minutes(HardwareSpec(time_limit_s=limit_s)) == minutes


def test_the_time_never_exceeds_the_partitions_limit() -> None:
    spec = HardwareSpec(time_limit_s=3590)
    assert SbatchOptions().time_minutes(spec, max_time_s=3600) == 60


@pytest.mark.parametrize(
    ("options", "says"),
    [
        ({"partition": "gpu;rm -rf /"}, "partition="),
        ({"partition": "-p"}, "partition="),
        ({"partition": ""}, "partition="),
        ({"partition": "a" * 129}, "partition="),
        ({"account": "team a"}, "account="),
        ({"account": "team\na"}, "account="),
        ({"qos": 7}, "qos="),
        ({"qos": "--time=1"}, "qos="),
        ({"gpu_types": "h100=h100"}, "gpu_types="),
        ({"gpu_types": {"h1000": "h100"}}, "h1000"),
        ({"gpu_types": {"h100": "h100:2"}}, "gpu_types['h100']"),
        ({"gpu_types": {"h100": "h100,gpu:a100"}}, "gpu_types['h100']"),
        ({"gpu_types": {"h100": 1}}, "gpu_types['h100']"),
        ({"sbatch_options": "--exclusive"}, "a list of options"),
        ({"sbatch_options": ["-x node1"]}, "one long option"),
        ({"sbatch_options": ["--exclusive\n#SBATCH --uid=0"]}, "no newline"),
        ({"sbatch_options": ["--comment=a\rb"]}, "no newline"),
        ({"sbatch_options": ["--comment=a\0b"]}, "no newline"),
        ({"sbatch_options": ["exclusive"]}, "one long option"),
        ({"sbatch_options": [b"--exclusive"]}, "one long option"),
        ({"sbatch_options": ["--gres=gpu:8"]}, "gpu_types"),
        ({"sbatch_options": ["--mem=1T"]}, "memory"),
        ({"sbatch_options": ["--time=10"]}, "time_limit"),
        ({"sbatch_options": ["--partition=other"]}, "partition option"),
        ({"sbatch_options": ["--wrap=id"]}, "batch script"),
        ({"sbatch_options": ["--export=ALL"]}, "--export=NONE"),
        ({"time_margin": -5}, "time_margin"),
        ({"time_margin": "soon"}, "time_margin"),
        ({"time_margin": True}, "time_margin"),
        ({"time_margin": float("nan")}, "time_margin"),
    ],
)
def test_hostile_or_malformed_options_are_refused_saying_what_is_accepted(
    options: dict[str, Any], says: str
) -> None:
    with pytest.raises(
        SpecError, match=r"must|set by cobalt|not a known GPU|not a duration; use"
    ) as caught:
        SbatchOptions.from_options(options)
    assert says in str(caught.value)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("train", "cobalt-train"),
        ("résumé; rm -rf /", "cobalt-r_sum_rm_-rf"),
        ("a\nb\tc", "cobalt-a_b_c"),
        ("--uid=0", "cobalt-uid_0"),
        ("", "cobalt-job"),
        ("../..", "cobalt-job"),
        ("x" * 200, "cobalt-" + "x" * 57),
    ],
)
def test_job_names_keep_safe_characters_only(text: str, name: str) -> None:
    assert job_name(text) == name
    assert len(job_name(text)) <= 64


NODE = NodeInfo("vm", cpus=2, real_memory_mb=8000, gres={"h100": 2}, partitions=("debug",))
DEBUG = PartitionInfo("debug", default=True)


@pytest.mark.parametrize(
    ("spec", "fits"),
    [
        (HardwareSpec(cpus=2, memory_mb=8000), True),
        (HardwareSpec(gpu="h100", gpus=2), True),
        (HardwareSpec(cpus=1.5), True),
        (HardwareSpec(cpus=2.01), False),
        (HardwareSpec(cpus=3), False),
        (HardwareSpec(memory_mb=8001), False),
        (HardwareSpec(gpu="h100", gpus=3), False),
        (HardwareSpec(gpu="a100-40gb", gpus=1), False),
    ],
)
def test_a_spec_fits_when_one_node_has_all_it_needs(spec: HardwareSpec, fits: bool) -> None:
    assert Capacity.of([NODE], [DEBUG]).can_ever_run(spec) is fits


def test_a_refusal_names_what_is_short_and_the_largest_node() -> None:
    capacity = Capacity.of([NODE], [DEBUG])
    with pytest.raises(UnsatisfiableError) as caught:
        capacity.check(HardwareSpec(gpu="h100", gpus=3, cpus=3))
    message = str(caught.value)
    assert "partition 'debug'" in message
    assert "3 CPUs or 3 GPUs of gres type 'h100'" in message
    assert "node vm: 2 CPUs, 7.8 GB, GPUs h100:2" in message


def test_needs_spread_over_two_nodes_do_not_fit() -> None:
    cpu = NodeInfo("cpu1", cpus=64, real_memory_mb=256000, partitions=("all",))
    gpu = NodeInfo("gpu1", cpus=8, real_memory_mb=64000, gres={"h100": 8}, partitions=("all",))
    capacity = Capacity.of([cpu, gpu], [PartitionInfo("all", default=True)])
    assert capacity.can_ever_run(HardwareSpec(cpus=64))
    assert capacity.can_ever_run(HardwareSpec(gpu="h100", gpus=8, cpus=8))
    reason = capacity.refusal(HardwareSpec(gpu="h100", gpus=1, cpus=16))
    assert reason is not None and "all of it on one node" in reason
    assert capacity.describe_largest() == (
        "at most 64 CPUs (cpu1), 250 GB (cpu1), h100:8 (gpu1) per node"
    )


def test_the_partition_chosen_decides_which_nodes_count() -> None:
    big = NodeInfo("big", cpus=128, real_memory_mb=8000, partitions=("long",))
    partitions = [DEBUG, PartitionInfo("long")]
    spec = HardwareSpec(cpus=100)
    assert not Capacity.of([NODE, big], partitions).can_ever_run(spec)
    long = Capacity.of([NODE, big], partitions, SbatchOptions(partition="long"))
    assert long.can_ever_run(spec)
    missing = Capacity.of([NODE, big], partitions, SbatchOptions(partition="gpu"))
    assert missing.refusal(spec) == (
        "Slurm partition 'gpu' has no nodes (partitions: debug, long); set the executor's "
        "partition."
    )


def test_a_time_limit_beyond_the_partitions_is_refused() -> None:
    capacity = Capacity.of([NODE], [PartitionInfo("debug", default=True, max_time_s=3600)])
    assert capacity.can_ever_run(HardwareSpec(time_limit_s=3600))
    reason = capacity.refusal(HardwareSpec(time_limit_s=7200))
    assert reason is not None and "at most 1h" in reason and "2h" in reason
    assert capacity.sbatch_arguments(HardwareSpec(time_limit_s=3590))[-1] == "--time=60"


def _replica(cpus: float = 1.0) -> TaskSubmission:
    return TaskSubmission(
        "replica/d/r1",
        "",
        0,
        "d replica r1",
        HardwareSpec(cpus=cpus),
        PayloadRef("ab" * 32, b"f", 1),
        [],
        long_running=True,
        replica=True,
    )


@pytest.mark.parametrize(
    ("max_time_s", "walltime_s", "time"),
    [(None, 12 * 3600, "--time=721"), (4 * 3600, 4 * 3600 - 60, "--time=240")],
)
def test_a_replica_gets_a_pilot_of_replica_time_within_the_partitions_limit(
    max_time_s: float | None, walltime_s: float, time: str
) -> None:
    executor = SlurmExecutor("hpc", {"replica_time": "12h", "pilot_time": "1h"})
    partition = PartitionInfo("debug", default=True, max_time_s=max_time_s)
    executor.capacity = capacity = Capacity.of([NODE], [partition])
    shape = executor.shape_for(_replica())
    assert shape.time_limit_s == walltime_s
    assert capacity.sbatch_arguments(shape)[-1] == time, "and Slurm's limit is kept"
    needs = executor.needs_of(_replica())
    assert needs.time_limit_s == walltime_s / 2, "it goes to a pilot with half of it left"
    assert executor.shape_for(_task_of(HardwareSpec(cpus=1))).time_limit_s == 3600


@pytest.mark.parametrize("mode", ["pilot", "job_per_task"])
def test_a_pilot_time_beyond_the_partitions_limit_is_cut_to_fit_it(mode: str) -> None:
    executor = SlurmExecutor("hpc", {"pilot_time": "2h", "mode": mode})
    partition = PartitionInfo("debug", default=True, max_time_s=1800)
    executor.capacity = capacity = Capacity.of([NODE], [partition])
    shape = executor.shape_for(_task_of(HardwareSpec(cpus=1)))
    assert capacity.sbatch_arguments(shape)[-1] == "--time=30"
    longer = executor.shape_for(_task_of(HardwareSpec(cpus=1, time_limit_s=1500)))
    assert longer.time_limit_s is not None and longer.time_limit_s >= 1500, "its limit still fits"


def _task_of(spec: HardwareSpec) -> TaskSubmission:
    return TaskSubmission("d/1/1", "d", 1, "t", spec, PayloadRef("ab" * 32, b"f", 1), [])


def test_sbatch_arguments_of_an_impossible_spec_raise_before_any_option_is_made() -> None:
    capacity = Capacity.of([NODE], [DEBUG], SbatchOptions(partition="debug"))
    with pytest.raises(UnsatisfiableError):
        capacity.sbatch_arguments(HardwareSpec(cpus=3))
    assert capacity.sbatch_arguments(H100, name="t") == [
        "--partition=debug",
        "--job-name=cobalt-t",
        "--export=NONE",
        "--gres=gpu:h100:1",
        "--cpus-per-task=1",
        "--mem=100M",
    ]


def _command(folder: Path, name: str, body: str) -> None:
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def test_commands_get_slurm_conf_and_the_script_on_stdin(tmp_path: Path) -> None:
    _command(
        tmp_path,
        "sbatch",
        f'echo "$SLURM_CONF $*" > {tmp_path}/argv; cat > {tmp_path}/script; echo "17;c"',
    )
    (tmp_path / "slurm.conf").write_text("ClusterName=x\n")
    cli = SlurmCli(tmp_path / "slurm.conf", bin_dir=tmp_path)
    assert cli.submit(["--cpus-per-task=1", "--comment=a b"], "#!/bin/sh\necho hi\n") == "17"
    assert (tmp_path / "argv").read_text() == (
        f"{tmp_path}/slurm.conf --parsable --cpus-per-task=1 --comment=a b\n"
    )
    assert (tmp_path / "script").read_text() == "#!/bin/sh\necho hi\n"


@pytest.mark.parametrize(
    ("stderr", "error", "says"),
    [
        (
            "sbatch: error: Batch job submission failed: Requested node configuration is not "
            "available",
            UnsatisfiableError,
            "can never run",
        ),
        ("sbatch: error: invalid partition specified: nope", UnsatisfiableError, "partition"),
        (
            "sbatch: error: Batch job submission failed: Unable to contact slurm controller "
            "(connect failure)",
            DispatchError,
            "scontrol ping",
        ),
        (
            "sbatch: fatal: Could not establish a configuration source",
            ConfigError,
            "slurm_conf",
        ),
    ],
)
def test_sbatch_failures_become_cobalt_errors_that_say_what_to_do(
    tmp_path: Path, stderr: str, error: type[Exception], says: str
) -> None:
    _command(tmp_path, "sbatch", f"echo '{stderr}' >&2; exit 1")
    with pytest.raises(error) as caught:
        SlurmCli(bin_dir=tmp_path).submit([], "#!/bin/sh\n")
    assert type(caught.value) is error
    assert "`sbatch` failed (exit 1)" in str(caught.value)
    assert stderr in str(caught.value)
    assert says in str(caught.value)


def test_a_missing_configuration_is_a_config_error_at_once(tmp_path: Path) -> None:
    _command(tmp_path, "scontrol", f"touch {tmp_path}/ran")
    with pytest.raises(ConfigError, match=r"nope\.conf does not exist.*slurm_conf"):
        SlurmCli(tmp_path / "nope.conf", bin_dir=tmp_path).nodes()
    assert not (tmp_path / "ran").exists()


def test_a_missing_command_is_a_config_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"`squeue` was not found.*slurm-client"):
        SlurmCli(bin_dir=tmp_path).jobs(["1"])


def test_a_command_that_hangs_is_stopped_after_the_timeout(tmp_path: Path) -> None:
    _command(tmp_path, "scontrol", "exec sleep 30")
    with pytest.raises(DispatchError, match=r"did not answer within 0.3 s"):
        SlurmCli(bin_dir=tmp_path, timeout_s=0.3).nodes()


def test_unreadable_output_is_a_dispatch_error_naming_the_command(tmp_path: Path) -> None:
    _command(tmp_path, "squeue", "echo 'JOBID STATE'")
    with pytest.raises(DispatchError, match="could not read what `squeue` printed"):
        SlurmCli(bin_dir=tmp_path).jobs(["1"])


def test_jobs_slurm_has_forgotten_are_absent_not_an_error(tmp_path: Path) -> None:
    _command(
        tmp_path, "squeue", "echo 'slurm_load_jobs error: Invalid job id specified' >&2; exit 1"
    )
    assert SlurmCli(bin_dir=tmp_path).jobs(["5", "6"]) == {}
    assert SlurmCli(bin_dir=tmp_path).jobs([]) == {}


@pytest.mark.parametrize("job_id", ["-u root", "--me", "1;2", "", "1 2", "x"])
def test_job_ids_that_are_not_slurm_ids_are_refused(tmp_path: Path, job_id: str) -> None:
    _command(tmp_path, "scancel", f"touch {tmp_path}/ran")
    cli = SlurmCli(bin_dir=tmp_path)
    with pytest.raises(ValueError, match="not a Slurm job id"):
        cli.cancel(job_id)
    with pytest.raises(ValueError, match="not a Slurm job id"):
        cli.jobs([job_id])
    assert not (tmp_path / "ran").exists()


def test_cancel_sends_a_signal_by_name_to_the_whole_job(tmp_path: Path) -> None:
    _command(tmp_path, "scancel", f'echo "$*" >> {tmp_path}/argv')
    cli = SlurmCli(bin_dir=tmp_path)
    cli.cancel("12")
    cli.cancel("12", signal="usr1")
    cli.cancel("12", signal=15)
    assert (tmp_path / "argv").read_text().splitlines() == [
        "12",
        "--signal=USR1 --full 12",
        "--signal=TERM --full 12",
    ]
    with pytest.raises(ValueError, match="not a signal"):
        cli.cancel("12", signal="TERM;id")


@pytest.mark.parametrize(
    ("options", "script"),
    [(["--comment=a\nb"], "#!/bin/sh\n"), (["comment"], "#!/bin/sh\n"), ([], "echo hi\n")],
)
def test_submit_refuses_options_and_scripts_sbatch_would_misread(
    tmp_path: Path, options: list[str], script: str
) -> None:
    _command(tmp_path, "sbatch", f"touch {tmp_path}/ran; echo 1")
    with pytest.raises(ValueError):
        SlurmCli(bin_dir=tmp_path).submit(options, script)
    assert not (tmp_path / "ran").exists()


def test_the_environment_carries_slurm_conf_over_the_process_environment() -> None:
    cli = SlurmCli("/a/slurm.conf", env={"SLURM_CONF": "/b", "X": "1"})
    assert cli.env["SLURM_CONF"] == "/a/slurm.conf"
    assert cli.env["X"] == "1"
    assert cli.env["PATH"] == os.environ["PATH"]
    with pytest.raises(ValueError, match="timeout_s"):
        SlurmCli(timeout_s=0)


class _Cluster:
    """Stands in for Slurm's commands: which nodes it has, or why it cannot answer."""

    def __init__(self) -> None:
        self.nodes_now: list[NodeInfo] | None = None
        self.reads = 0

    def nodes(self) -> list[NodeInfo]:
        self.reads += 1
        if self.nodes_now is None:
            raise ConfigError("slurmctld at 127.0.0.1:6817 does not answer")
        return self.nodes_now

    def partitions(self) -> list[PartitionInfo]:
        return [DEBUG]


def test_the_executor_reads_the_cluster_again_and_sees_nodes_added_later(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cobalt_executors.slurm import _executor

    executor = _executor.SlurmExecutor("hpc", {})
    cluster = _Cluster()
    executor.cli = cluster  # type: ignore[assignment]
    executor.refresh_capacity()
    assert not executor.can_ever_run(H100)
    assert "slurmctld at 127.0.0.1:6817 does not answer" in executor.capacity_words(H100)
    executor.reread_when_due()
    assert cluster.reads == 1, "retried only after a pause"
    monkeypatch.setattr(_executor, "CAPACITY_RETRY_S", 0.0)
    cluster.nodes_now = [NodeInfo("vm", 2, 8000, partitions=("debug",))]
    executor.reread_when_due()
    assert executor.capacity is not None and not executor.problem
    assert not executor.can_ever_run(H100), "no GPU node yet"
    cluster.nodes_now.append(NodeInfo("gpu1", 8, 64000, gres={"h100": 2}, partitions=("debug",)))
    executor.reread_when_due()
    assert cluster.reads == 2, "a readable cluster is read again only every minute"
    monkeypatch.setattr(_executor, "CAPACITY_EVERY_S", 0.0)
    executor.reread_when_due()
    assert executor.can_ever_run(H100)
    cluster.nodes_now = None  # unreadable now: what was read last still counts
    executor.reread_when_due()
    assert executor.can_ever_run(H100) and "does not answer" in executor.problem
