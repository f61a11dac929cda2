"""Reading what Slurm's commands print, on output captured from a real Slurm 22.05 cluster
(one node, 2 CPUs, 8000 MB, gres gpu:h100:2)."""

from __future__ import annotations

import doctest

import pytest

from cobalt_executors.slurm import _capacity, _cli, _parse, _sbatch
from cobalt_executors.slurm._parse import (
    JobState,
    ParseError,
    parse_fields,
    parse_gpu_gres,
    parse_jobs,
    parse_nodes,
    parse_partitions,
    parse_slurm_time_s,
    parse_submitted,
)

pytestmark = pytest.mark.unit

NODE_IDLE = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=0 CPUEfctv=2 CPUTot=2 CPULoad=0.97 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:h100:2 NodeAddr=127.0.0.1 "
    "NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0  "
    "RealMemory=8000 AllocMem=0 FreeMem=19698 Sockets=2 Boards=1 State=IDLE ThreadsPerCore=1 "
    "TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  BootTime=2026-12-06T18:55:34 "
    "SlurmdStartTime=2026-12-07T01:30:36 LastBusyTime=2026-12-07T01:30:36 "
    "CfgTRES=cpu=2,mem=8000M,billing=2 AllocTRES= CapWatts=n/a CurrentWatts=0 AveWatts=0 "
    "ExtSensorsJoules=n/s ExtSensorsWatts=0 ExtSensorsTemp=n/s\n"
)
"""``scontrol show node -o`` of the idle test node."""

NODE_DRAINING = (
    "NodeName=vm Arch=x86_64 CoresPerSocket=1  CPUAlloc=2 CPUEfctv=2 CPUTot=2 CPULoad=0.97 "
    "AvailableFeatures=(null) ActiveFeatures=(null) Gres=gpu:h100:2 NodeAddr=127.0.0.1 "
    "NodeHostName=vm Version=22.05.8 OS=Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0  "
    "RealMemory=8000 AllocMem=200 FreeMem=19698 Sockets=2 Boards=1 State=ALLOCATED+DRAIN "
    "ThreadsPerCore=1 TmpDisk=0 Weight=1 Owner=N/A MCS_label=N/A Partitions=debug  "
    "BootTime=2026-12-06T18:55:34 SlurmdStartTime=2026-12-07T01:30:36 "
    "LastBusyTime=2026-12-07T01:30:47 CfgTRES=cpu=2,mem=8000M,billing=2 "
    "AllocTRES=cpu=2,mem=200M CapWatts=n/a CurrentWatts=0 AveWatts=0 ExtSensorsJoules=n/s "
    "ExtSensorsWatts=0 ExtSensorsTemp=n/s Reason=maintenance window, back at 10:00 "
    "[root@2026-12-07T01:31:41]\n"
)
"""The same node running two 1-GPU jobs, drained with a reason that holds spaces."""

PARTITION = (
    "PartitionName=debug AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL AllocNodes=ALL "
    "Default=YES QoS=N/A DefaultTime=NONE DisableRootJobs=NO ExclusiveUser=NO GraceTime=0 "
    "Hidden=NO MaxNodes=UNLIMITED MaxTime=UNLIMITED MinNodes=0 LLN=NO "
    "MaxCPUsPerNode=UNLIMITED Nodes=vm PriorityJobFactor=1 PriorityTier=1 RootOnly=NO "
    "ReqResv=NO OverSubscribe=NO OverTimeLimit=NONE PreemptMode=OFF State=UP TotalCPUs=2 "
    "TotalNodes=1 SelectTypeParameters=NONE JobDefaults=(null) DefMemPerNode=UNLIMITED "
    "MaxMemPerNode=UNLIMITED TRES=cpu=2,mem=8000M,node=1,billing=2\n"
)

SQUEUE = (
    "2|PENDING||UNLIMITED|Resources\n"
    "3|PENDING||UNLIMITED|Priority\n"
    "4|PENDING||1:00|Priority\n"
    "5|PENDING||UNLIMITED|PartitionConfig\n"
    "1|RUNNING|vm|UNLIMITED|None\n"
    "10|RUNNING|vm|2-02:59:59|None\n"
)
"""``squeue -h -t all -o '%i|%T|%N|%L|%r'`` while two GPU jobs ran and others waited."""

SQUEUE_ENDED = (
    "1|CANCELLED|vm|UNLIMITED|None\n4|COMPLETED|vm|1:00|None\n6|FAILED||UNLIMITED|BadConstraints\n"
)


def test_a_node_line_gives_its_cpus_memory_gpus_state_and_partitions() -> None:
    [node] = parse_nodes(NODE_IDLE)
    assert node.name == "vm"
    assert node.cpus == 2
    assert node.real_memory_mb == 8000
    assert dict(node.gres) == {"h100": 2}
    assert node.state == "IDLE"
    assert node.partitions == ("debug",)
    assert node.usable


def test_values_with_spaces_stay_whole_and_a_drained_node_is_not_usable() -> None:
    fields = parse_fields(NODE_DRAINING.strip())
    assert fields["OS"] == "Linux 6.18.44-fc-v1300 #1 SMP PREEMPT_DYNAMIC @0"
    assert fields["Reason"] == "maintenance window, back at 10:00 [root@2026-12-07T01:31:41]"
    assert fields["CfgTRES"] == "cpu=2,mem=8000M,billing=2"
    [node] = parse_nodes(NODE_DRAINING)
    assert node.state == "ALLOCATED+DRAIN"
    assert not node.usable


def test_several_nodes_are_read_one_a_line() -> None:
    second = NODE_IDLE.replace("NodeName=vm", "NodeName=gpu01").replace("CPUEfctv=2", "CPUEfctv=64")
    nodes = parse_nodes(NODE_IDLE + "\n" + second)
    assert [(node.name, node.cpus) for node in nodes] == [("vm", 2), ("gpu01", 64)]


@pytest.mark.parametrize(
    ("gres", "gpus"),
    [
        ("gpu:h100:2", {"h100": 2}),
        ("gpu:h100:2(S:0-1)", {"h100": 2}),
        ("gpu:a100:4(S:0,1),gpu:v100:2(S:1)", {"a100": 4, "v100": 2}),
        ("gpu:4", {"": 4}),
        ("gpu", {"": 1}),
        ("gpu:h100", {"h100": 1}),
        ("mps:400,gpu:l40s:8,shard:16", {"l40s": 8}),
        ("gpu:a100:1K", {"a100": 1024}),
        ("(null)", {}),
        ("", {}),
    ],
)
def test_gpu_gres_is_counted_by_type(gres: str, gpus: dict[str, int]) -> None:
    assert parse_gpu_gres(gres) == gpus


def test_untyped_gpus_serve_a_request_for_any_type_only() -> None:
    [node] = parse_nodes(NODE_IDLE.replace("Gres=gpu:h100:2", "Gres=gpu:h100:2,gpu:3"))
    assert node.gpus_of("h100") == 2
    assert node.gpus_of("") == 5
    assert node.gpus_of("a100") == 0


def test_older_slurm_without_cpuefctv_uses_cputot() -> None:
    [node] = parse_nodes(NODE_IDLE.replace("CPUEfctv=2 ", ""))
    assert node.cpus == 2


@pytest.mark.parametrize(
    "line",
    [
        "Arch=x86_64 CPUTot=2 RealMemory=8000",
        "NodeName=vm CPUTot=two RealMemory=8000",
        "NodeName=vm CPUTot=2",
    ],
)
def test_a_node_line_that_cannot_be_read_raises_parse_error(line: str) -> None:
    with pytest.raises(ParseError):
        parse_nodes(line)


def test_a_partition_line_gives_its_default_state_and_time_limit() -> None:
    [partition] = parse_partitions(PARTITION)
    assert (partition.name, partition.default, partition.state) == ("debug", True, "UP")
    assert partition.max_time_s is None
    [limited] = parse_partitions(PARTITION.replace("MaxTime=UNLIMITED", "MaxTime=1-00:00:00"))
    assert limited.max_time_s == 86400


def test_squeue_lines_give_each_jobs_state_reason_node_and_time_left() -> None:
    jobs = parse_jobs(SQUEUE)
    assert jobs["2"] == JobState("PENDING", "Resources", "", None)
    assert jobs["4"].time_left_s == 60
    assert jobs["5"].reason == "PartitionConfig"
    assert jobs["1"] == JobState("RUNNING", "None", "vm", None)
    assert jobs["10"].time_left_s == 2 * 86400 + 2 * 3600 + 59 * 60 + 59
    assert jobs["1"].running and jobs["2"].pending
    assert not any(job.ended for job in jobs.values())


def test_ended_jobs_are_marked_ended() -> None:
    jobs = parse_jobs(SQUEUE_ENDED)
    assert {job_id: job.state for job_id, job in jobs.items()} == {
        "1": "CANCELLED",
        "4": "COMPLETED",
        "6": "FAILED",
    }
    assert all(job.ended for job in jobs.values())


def test_a_reason_may_hold_the_separator() -> None:
    assert parse_jobs("7|PENDING||5:00|odd|reason\n")["7"].reason == "odd|reason"


@pytest.mark.parametrize("line", ["7|PENDING|", "|RUNNING|vm|1:00|None", "7|RUNNING|vm|soon|None"])
def test_an_squeue_line_that_cannot_be_read_raises_parse_error(line: str) -> None:
    with pytest.raises(ParseError):
        parse_jobs(line)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30", 1800),
        ("1:00", 60),
        ("1:59", 119),
        ("1:00:00", 3600),
        ("2-03", 2 * 86400 + 3 * 3600),
        ("2-03:04", 2 * 86400 + 3 * 3600 + 4 * 60),
        ("2-03:04:05", 2 * 86400 + 3 * 3600 + 4 * 60 + 5),
        ("-0:05", 0),
        ("UNLIMITED", None),
        ("INFINITE", None),
        ("NOT_SET", None),
    ],
)
def test_slurm_durations_are_read_as_seconds(text: str, seconds: float | None) -> None:
    assert parse_slurm_time_s(text) == seconds


@pytest.mark.parametrize("text", ["1:2:3:4", "x-01:00", "1h", "1::2"])
def test_a_malformed_slurm_duration_raises_parse_error(text: str) -> None:
    with pytest.raises(ParseError):
        parse_slurm_time_s(text)


def test_sbatch_parsable_answers_give_the_job_id() -> None:
    assert parse_submitted("42\n") == "42"
    assert parse_submitted("42;cobalt-test\n") == "42"
    with pytest.raises(ParseError):
        parse_submitted("Submitted batch job 42")


@pytest.mark.parametrize("module", [_parse, _cli, _sbatch, _capacity])
def test_the_slurm_modules_examples_run(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]
