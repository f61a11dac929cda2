"""The agent protocol's pieces without processes: wire conversions (hostile input
refused), version checks, signed agent credentials, and the controller-side pool
of agents (placement, acknowledgements, losses, tasks taken back after a restart)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from cobalt_common.errors import ExecutorError, ProtocolError
from cobalt_common.hardware import HardwareGiven, HardwareSpec
from cobalt_common.runtime import runtime_versions, version_mismatch
from cobalt_common.status import Status
from cobalt_common.v1 import agent_pb2
from cobalt_controller.agents import AgentKeys
from cobalt_executors import PayloadRef, TaskArg, TaskOutcome, TaskSubmission
from cobalt_executors._inventory import GpuDevice
from cobalt_executors.remote import AgentInfo, AgentLink, AgentPool
from cobalt_executors.remote._pool import fits_walltime
from cobalt_executors.remote._protocol import (
    AGENT_LOST,
    outcome_from_wire,
    outcome_to_wire,
    payload_from_wire,
    task_from_wire,
    task_to_wire,
)

pytestmark = pytest.mark.unit

SHA = "ab" * 32


def _task(key: str = "d/1/1", **hardware: object) -> TaskSubmission:
    return TaskSubmission(
        task_key=key,
        dispatch_id="d",
        node_id=1,
        name="t",
        hardware=HardwareSpec(**hardware),  # type: ignore[arg-type]
        function=PayloadRef(SHA, b"fn", 2),
        args=[TaskArg(0, "", PayloadRef(SHA, b"x", 1)), TaskArg(-1, "k", PayloadRef(SHA, b"y", 1))],
        env={"A": "1"},
        client_runtime={"python": "3.11"},
    )


# -- wire ---------------------------------------------------------------------------


def test_a_task_and_an_outcome_survive_the_wire_unchanged() -> None:
    task = _task(cpus=2, gpu="h100", gpus=1, time_limit_s=60)
    back = task_from_wire(agent_pb2.AgentTask.FromString(task_to_wire(task).SerializeToString()))
    assert back == task
    outcome = TaskOutcome(
        "d/1/1",
        Status.COMPLETED,
        output=PayloadRef(SHA, b"out", 3),
        stdout="o",
        started_at=1.0,
        ended_at=2.0,
        hardware_given=HardwareGiven(2.0, 0, "h100", (1,), True),
    )
    assert outcome_from_wire(outcome_to_wire(outcome, 7)) == outcome


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda m: setattr(m, "status", "SKIPPED"), "is not an outcome"),
        (lambda m: setattr(m, "status", "DONE"), "unknown status"),
        (lambda m: setattr(m, "given_json", "{"), "unreadable hardware given"),
        (lambda m: setattr(m, "given_json", '{"cpus": -1}'), "not a count"),
        (lambda m: setattr(m, "given_json", '{"gpu_indices": [99999]}'), "bad GPU indices"),
        (lambda m: setattr(m, "given_json", "[1, 2]"), "list, not an object"),
        (lambda m: setattr(m, "given_json", "[" * 100_000 + "]" * 100_000), "unreadable"),
        (lambda m: setattr(m.output, "sha256", "../../etc/passwd"), "sha256"),
    ],
)
def test_a_malformed_outcome_is_refused_with_what_is_wrong(change: object, complaint: str) -> None:
    msg = outcome_to_wire(TaskOutcome("k", Status.COMPLETED, PayloadRef(SHA, b"o", 1)), 1)
    change(msg)  # type: ignore[operator]
    with pytest.raises(ProtocolError, match=complaint):
        outcome_from_wire(msg)


@pytest.mark.parametrize("hardware", ["{", "[]", "[" * 100_000 + "]" * 100_000, '{"cpus": "x"}'])
def test_a_task_with_unreadable_hardware_is_refused(hardware: str) -> None:
    msg = task_to_wire(_task())
    msg.hardware_json = hardware
    with pytest.raises(ProtocolError, match="unreadable hardware"):
        task_from_wire(msg)


def test_an_inline_payload_whose_size_disagrees_with_its_bytes_is_refused() -> None:
    with pytest.raises(ProtocolError, match="size says 5"):
        payload_from_wire(agent_pb2.AgentPayload(sha256=SHA, data=b"abc", size=5), "arg")


def test_versions_that_differ_are_named_on_both_sides_and_equal_ones_pass() -> None:
    mine = runtime_versions()
    assert version_mismatch(mine, mine) == ""
    assert version_mismatch({}, mine) == ""
    why = version_mismatch({**mine, "cobalt": "0.0.1"}, mine)
    assert f"the client runs cobalt 0.0.1 but this agent runs cobalt {mine['cobalt']}" in why
    assert "install the client's versions" in why


# -- credentials --------------------------------------------------------------------


def test_an_agent_credential_names_its_executor_and_survives_a_new_keys_object(
    tmp_path: Path,
) -> None:
    keys = AgentKeys(tmp_path / "agent.key")
    token = keys.mint("slurm", "job-42", ttl_s=60)
    scope = AgentKeys(tmp_path / "agent.key").scope(token)  # as after a restart
    assert scope is not None and (scope.executor, scope.allocation) == ("slurm", "job-42")
    assert (tmp_path / "agent.key").stat().st_mode & 0o777 == 0o600


def test_forged_expired_foreign_and_malformed_agent_credentials_are_refused(
    tmp_path: Path,
) -> None:
    keys = AgentKeys(tmp_path / "a.key")
    other = AgentKeys(tmp_path / "b.key")
    token = keys.mint("remote")
    claims = token.split(".")[1]
    forged_claims = json.dumps({"e": "other", "a": "", "x": time.time() + 99})
    import base64

    forged = (
        "cba1."
        + base64.urlsafe_b64encode(forged_claims.encode()).rstrip(b"=").decode()
        + "."
        + token.split(".")[2]
    )
    expired = keys.mint("remote", ttl_s=0.001)
    time.sleep(0.01)
    for bad in (forged, expired, other.mint("remote"), "cba1.", f"cba1.{claims}", "x" * 5000):
        assert keys.scope(bad) is None, bad[:40]
    with pytest.raises(ValueError):
        keys.mint("bad name; rm -rf /")


# -- the pool -----------------------------------------------------------------------


class FakeLink(AgentLink):
    def __init__(self) -> None:
        self.sent: list[agent_pb2.AgentCommand] = []
        self.closed = ""

    def send(self, command: agent_pb2.AgentCommand) -> None:
        self.sent.append(command)

    def close(self, message: str) -> None:
        self.closed = message

    def tasks(self) -> list[str]:
        return [c.task.task_key for c in self.sent if c.WhichOneof("command") == "task"]

    def acks(self) -> list[int]:
        return [s for c in self.sent if c.WhichOneof("command") == "ack" for s in c.ack.seqs]


def _info(agent_id: str, cpus: float = 2, gpus: int = 0, **kw: object) -> AgentInfo:
    devices = tuple(GpuDevice(i, "h100", True) for i in range(gpus))
    return AgentInfo(agent_id, "host", "", cpus, 4096, devices, **kw)  # type: ignore[arg-type]


class Pool:
    def __init__(self, grace: float = 30.0) -> None:
        self.reports: list[TaskOutcome] = []
        self.pool = AgentPool("remote", self.reports.append, reconnect_grace_s=grace)


def _outcome(key: str, seq: int) -> agent_pb2.AgentOutcome:
    return outcome_to_wire(TaskOutcome(key, Status.COMPLETED, PayloadRef(SHA, b"o", 1)), seq)


def test_tasks_go_to_agents_with_room_and_wait_when_none_has_any() -> None:
    p = Pool()
    a, b = FakeLink(), FakeLink()
    p.pool.attach(a, _info("a", cpus=1))
    p.pool.attach(b, _info("b", cpus=1, gpus=1))
    assert p.pool.submit(_task("t1", cpus=1)) is not None
    assert p.pool.submit(_task("t2", cpus=1)) is not None
    assert p.pool.submit(_task("t3", cpus=1)) is None
    assert (a.tasks(), b.tasks()) == (["t1"], ["t2"])
    assert not p.pool.can_ever_run(HardwareSpec(cpus=2))
    assert p.pool.can_ever_run(HardwareSpec(gpu="h100", gpus=1))


def test_an_outcome_is_reported_once_and_acknowledged_only_after_it_is_stored() -> None:
    p = Pool()
    link = FakeLink()
    p.pool.attach(link, _info("a"))
    p.pool.submit(_task("t1", cpus=1))
    p.pool.outcome(link, _outcome("t1", 5))
    assert [o.task_key for o in p.reports] == ["t1"]
    assert link.acks() == [], "not before the controller stored it"
    stored = p.reports[0].on_stored
    assert stored is not None
    stored()
    assert link.acks() == [5]
    p.pool.outcome(link, _outcome("t1", 5))  # sent again after a reconnect
    assert len(p.reports) == 1, "a duplicate is not recorded twice"
    assert link.acks() == [5, 5], "but it is acknowledged, so the agent forgets it"


def test_an_agent_cannot_report_the_outcome_of_a_task_another_agent_runs() -> None:
    p = Pool()
    honest, thief = FakeLink(), FakeLink()
    p.pool.attach(honest, _info("honest"))
    p.pool.attach(thief, _info("thief"))
    p.pool.submit(_task("t1", cpus=2))
    assert honest.tasks() == ["t1"]
    p.pool.outcome(thief, _outcome("t1", 1))
    assert p.reports == [] and thief.acks() == [1]
    p.pool.outcome(honest, _outcome("t1", 9))
    assert [o.task_key for o in p.reports] == ["t1"]


def test_a_closed_stream_reports_each_of_its_tasks_lost_at_once() -> None:
    p = Pool()
    link = FakeLink()
    p.pool.attach(link, _info("a", cpus=2))
    p.pool.submit(_task("t1", cpus=1))
    p.pool.submit(_task("t2", cpus=1))
    p.pool.detach(link, "its stream closed")
    assert sorted(o.task_key for o in p.reports) == ["t1", "t2"]
    assert {(o.status, o.reason) for o in p.reports} == {(Status.FAILED, AGENT_LOST)}
    assert "went away while the task ran (its stream closed)" in p.reports[0].error
    assert p.pool.submit(_task("t3", cpus=1)) is None, "no agent is left"


def test_a_task_taken_back_after_a_restart_is_claimed_by_its_agent_or_lost_after_the_grace() -> (
    None
):
    p = Pool(grace=0.3)
    p.pool.reclaim("kept", HardwareGiven(1.0, 0))
    p.pool.reclaim("gone", HardwareGiven(1.0, 0))
    link = FakeLink()
    assert p.pool.attach(link, _info("a", running=("kept", "stale"))) == []
    p.pool.outcome(FakeLink(), _outcome("gone", 1))  # not claimed by that link: dropped
    p.pool.outcome(link, _outcome("kept", 1))
    deadline = time.monotonic() + 5
    while len(p.reports) < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    by_key = {o.task_key: o for o in p.reports}
    assert by_key["kept"].status == Status.COMPLETED
    assert (by_key["gone"].status, by_key["gone"].reason) == (Status.FAILED, AGENT_LOST)
    assert "claimed this task within 0.3 s" in by_key["gone"].error
    assert _cancels(link) == ["stale"], "a task nobody asked for within the grace is stopped"


def _cancels(link: FakeLink) -> list[str]:
    return [c.cancel.task_key for c in link.sent if c.WhichOneof("command") == "cancel"]


def test_a_task_started_again_after_a_restart_is_taken_back_from_the_agent_that_runs_it() -> None:
    """The previous controller sent ``t/1`` and died before storing that: the new one
    starts the same attempt again, and the agent that claims it keeps it."""
    p = Pool()
    other, link = FakeLink(), FakeLink()
    p.pool.attach(other, _info("other", cpus=4))
    assert p.pool.attach(link, _info("a", cpus=1, running=("t/1",))) == []
    idle = [info.agent_id for info, _, _ in p.pool.idle()]
    assert idle == ["other"], "an agent with a claimed task is not idle"
    assert p.pool.submit(_task("t/1", cpus=1)) is not None
    assert other.tasks() == link.tasks() == [], "nothing is sent: it runs already"
    runner = p.pool.agent_of("t/1")
    assert runner is not None and runner.agent_id == "a"
    p.pool.outcome(link, _outcome("t/1", 3))
    assert [o.task_key for o in p.reports] == ["t/1"]
    assert _cancels(link) == []


def test_a_claimed_task_that_ended_is_reported_when_asked_for_and_acknowledged_after() -> None:
    p = Pool()
    link = FakeLink()
    p.pool.attach(link, _info("a", running=("t/1",)))
    p.pool.outcome(link, _outcome("t/1", 7))  # its kept outcome, sent on welcome
    assert p.reports == [] and link.acks() == [], "held, not dropped: it may be asked for"
    p.pool.outcome(link, _outcome("t/1", 7))  # sent again after a reconnect
    assert link.acks() == []
    assert p.pool.submit(_task("t/1", cpus=1)) is not None
    assert link.tasks() == [] and [o.task_key for o in p.reports] == ["t/1"]
    stored = p.reports[0].on_stored
    assert stored is not None
    stored()
    assert link.acks() == [7]


def test_an_agent_that_attaches_before_the_restart_reclaims_keeps_its_task() -> None:
    p = Pool()
    link = FakeLink()
    p.pool.attach(link, _info("a", running=("running", "ended")))
    p.pool.outcome(link, _outcome("ended", 2))
    p.pool.reclaim("running", HardwareGiven(1.0, 0))
    p.pool.reclaim("ended", HardwareGiven(1.0, 0))
    assert [o.task_key for o in p.reports] == ["ended"]
    assert _cancels(link) == [] and link.tasks() == []
    p.pool.outcome(link, _outcome("running", 3))
    assert [o.task_key for o in p.reports] == ["ended", "running"]


def _wait_for_cancels(link: FakeLink, seconds: float) -> list[str]:
    deadline = time.monotonic() + seconds
    while not _cancels(link) and time.monotonic() < deadline:
        time.sleep(0.02)
    return _cancels(link)


@pytest.mark.parametrize("adopted_first", [True, False])
def test_a_replica_adopted_after_a_restart_stays_with_the_agent_that_claims_it(
    adopted_first: bool,
) -> None:
    p = Pool(grace=0.2)
    link = FakeLink()
    given = HardwareGiven(cpus=1.0, memory_mb=1024)
    if adopted_first:  # the controller adopts before its agents are back
        assert p.pool.adopt("replica/r1", given)
    p.pool.attach(link, _info("a", cpus=2, running=("replica/r1",)))
    if not adopted_first:
        assert p.pool.adopt("replica/r1", given)
    assert p.pool.summary().free_now()[:2] == (1.0, 4096 - 1024), "its hardware is held"
    assert _wait_for_cancels(link, 0.6) == [], "an adopted replica is not stopped"
    assert p.pool.idle() == []
    p.pool.release("replica/r1")
    assert p.pool.summary().free_now()[:2] == (2.0, 4096)


def test_a_replica_adopted_while_no_agent_is_back_waits_for_its_agent_until_released() -> None:
    p = Pool(grace=0.2)
    assert p.pool.adopt("replica/r1", HardwareGiven(cpus=1.0))
    assert p.pool.adopt("replica/r2", HardwareGiven(cpus=1.0))
    time.sleep(0.4)  # its agent takes longer than the grace to reconnect
    p.pool.release("replica/r2")  # the deployment found r2 gone meanwhile
    link = FakeLink()
    p.pool.attach(link, _info("late", cpus=2, running=("replica/r1", "replica/r2")))
    assert p.pool.summary().free_now()[0] == 1.0, "r1 is held, r2 is not"
    assert _wait_for_cancels(link, 2.0) == ["replica/r2"], "only the released one is stopped"


def test_a_claimed_outcome_nobody_asks_for_is_dropped_after_the_grace() -> None:
    p = Pool(grace=0.2)
    link, thief = FakeLink(), FakeLink()
    p.pool.attach(link, _info("a", running=("t/1",)))
    p.pool.attach(thief, _info("b"))
    p.pool.outcome(thief, _outcome("t/1", 2))  # not the claimant's: dropped at once
    assert thief.acks() == [2]
    p.pool.outcome(link, _outcome("t/1", 4))
    deadline = time.monotonic() + 5
    while not link.acks() and time.monotonic() < deadline:
        time.sleep(0.02)
    assert link.acks() == [4] and p.reports == [] and _cancels(link) == []
    assert p.pool.submit(_task("t/1", cpus=1)) is not None
    assert link.tasks() == ["t/1"] or thief.tasks() == ["t/1"], "after the grace, it runs anew"


def test_a_claimed_task_goes_back_to_a_new_agent_when_its_agent_leaves() -> None:
    p = Pool()
    gone, fresh = FakeLink(), FakeLink()
    p.pool.attach(gone, _info("gone", running=("t/1",)))
    p.pool.detach(gone, "its stream closed")
    assert p.reports == [], "it was never this controller's to lose"
    p.pool.attach(fresh, _info("fresh"))
    assert p.pool.submit(_task("t/1", cpus=1)) is not None
    assert fresh.tasks() == ["t/1"]


def test_an_allocation_too_short_for_a_time_limit_gets_no_task() -> None:
    now = time.time()
    assert not fits_walltime(now + 30, HardwareSpec(time_limit_s=60), now)
    assert fits_walltime(now + 600, HardwareSpec(time_limit_s=60), now)
    p = Pool()
    p.pool.attach(FakeLink(), _info("short", expires_at=now + 30))
    assert p.pool.submit(_task("t", cpus=1, time_limit_s=60)) is None


def test_a_replica_goes_only_to_an_agent_with_the_walltime_a_replica_asks_left() -> None:
    now = time.time()
    p = Pool()
    p.pool.replica_time_left_s = lambda: 900.0
    short, long = FakeLink(), FakeLink()
    p.pool.attach(short, _info("short", cpus=1, expires_at=now + 600))
    replica = _task("replica/d/r1", cpus=1)
    replica.long_running = replica.replica = True
    assert p.pool.submit(replica) is None, "a replica has no limit, yet asks for 15 min"
    assert p.pool.submit(_task("t", cpus=1)) is not None, "a task without a limit fits"
    p.pool.attach(long, _info("long", cpus=1, expires_at=now + 3600))
    assert p.pool.submit(replica) is not None
    assert (short.tasks(), long.tasks()) == (["t"], ["replica/d/r1"])


def test_a_long_running_task_never_waits_in_an_agents_queue() -> None:
    p = Pool()
    p.pool.prefetch = 8
    link = FakeLink()
    p.pool.attach(link, _info("a", cpus=1))
    assert p.pool.submit(_task("run", cpus=1)) is not None
    replica = _task("replica/d/r1", cpus=1)
    replica.long_running = replica.replica = True
    assert p.pool.submit(replica) is None, "it waits for room, where an executor may make some"
    assert p.pool.submit(_task("short", cpus=1)) is not None, "short work still queues ahead"
    assert link.tasks() == ["run", "short"]


def test_a_stopping_pool_refuses_agents_and_tasks() -> None:
    p = Pool()
    link = FakeLink()
    p.pool.attach(link, _info("a"))
    p.pool.close("the controller is stopping")
    assert link.closed == "the controller is stopping"
    with pytest.raises(ExecutorError, match="stopping"):
        p.pool.attach(FakeLink(), _info("b"))
    assert p.pool.submit(_task("t", cpus=1)) is None


def test_an_agent_holding_an_adopted_replica_is_idle_only_from_when_it_is_released() -> None:
    now = [100.0]
    pool = AgentPool("remote", lambda _: None, clock=lambda: now[0])
    link = FakeLink()
    pool.attach(link, _info("a", cpus=2, gpus=1))
    held = HardwareGiven(cpus=1.0, gpu="h100", gpu_indices=(0,), emulated=True)
    assert pool.adopt("replica", held)
    now[0] = 200.0
    assert pool.idle() == [], "a replica holds hardware there: it is not idle"
    pool.release("replica")
    now[0] = 230.0
    assert [(info.agent_id, ran, idle_s) for info, ran, idle_s in pool.idle()] == [("a", 0, 30.0)]
    assert pool.adopt("replica", held) and pool.adopt("replica", held) is False
    pool.release("replica")
    assert pool.summary().free_now()[0] == 2.0, "adopted once, released once"


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda h: setattr(h, "cpus", float("nan")), "is not a count"),
        (lambda h: setattr(h, "cpus", 0), "is not a count"),
        (lambda h: setattr(h, "memory_mb", 1 << 60), "more than any machine"),
        (lambda h: setattr(h, "agent_id", "a b"), "not a plain name"),
        (lambda h: setattr(h, "hostname", "evil\nhost"), "not a host name"),
        (lambda h: setattr(h, "expires_at", float("inf")), "not a time"),
        (lambda h: h.gpus.add(index=0, type="h100"), "repeated"),
        (lambda h: h.gpus.add(index=1, type="quantum9000"), "quantum9000"),
        (lambda h: h.running.append("k" * 300), "longer than any task key"),
    ],
)
def test_a_hostile_hello_is_refused_with_what_is_wrong(change: object, complaint: str) -> None:
    from cobalt_controller.agents._service import agent_info

    hello = agent_pb2.AgentHello(agent_id="a1", hostname="h", cpus=2, memory_mb=1024)
    hello.gpus.add(index=0, type="h100")
    assert agent_info(hello).gpus == (GpuDevice(0, "h100", False),)
    change(hello)  # type: ignore[operator]
    with pytest.raises(ProtocolError, match=complaint):
        agent_info(hello)


def test_with_prefetch_an_agent_holds_cpu_tasks_queued_beyond_its_room_in_order() -> None:
    p = Pool()
    p.pool.prefetch = 2
    link = FakeLink()
    p.pool.attach(link, _info("a", cpus=1))
    assert p.pool.submit(_task("run", cpus=1)) is not None
    queued = [p.pool.submit(_task(f"q{i}", cpus=1)) for i in range(3)]
    assert queued[:2] == [HardwareGiven(cpus=1.0)] * 2 and queued[2] is None, "two ahead"
    assert p.pool.submit(_task("g", gpu="h100", gpus=1)) is None, "GPU tasks never wait ahead"
    assert link.tasks() == ["run", "q0", "q1"]
    p.pool.outcome(link, _outcome("run", 1))
    assert p.pool.submit(_task("q2", cpus=1)) is not None, "q0 took the room; q2 queues"
    p.pool.detach(link, "gone")
    assert sorted(o.task_key for o in p.reports if o.reason == AGENT_LOST) == ["q0", "q1", "q2"]


def _ran(key: str, seq: int, seconds: float) -> agent_pb2.AgentOutcome:
    return outcome_to_wire(
        TaskOutcome(
            key,
            Status.COMPLETED,
            PayloadRef(SHA, b"o", 1),
            started_at=100.0,
            ended_at=100.0 + seconds,
        ),
        seq,
    )


def _fill(p: Pool, link: FakeLink, prefix: str) -> int:
    """Submits CPU tasks until the pool refuses; how many went ahead of the room."""
    ahead = 0
    while p.pool.submit(_task(f"{prefix}{ahead}", cpus=1)) is not None:
        ahead += 1
        assert ahead < 1000
    return ahead - 2  # the agent's two CPUs took the first two


@pytest.mark.parametrize(
    ("run_s", "depth"),
    [(0.0001, 64), (0.002, 20), (0.05, 1), (30.0, 1)],
)
def test_an_agent_queues_about_20_ms_of_its_work_ahead_at_most_prefetch(
    run_s: float, depth: int
) -> None:
    p = Pool()
    p.pool.prefetch = 64
    link = FakeLink()
    p.pool.attach(link, _info("a", cpus=2))
    assert _fill(p, link, "first") == 2, "two ahead before any task has ended"
    for seq, key in enumerate(link.tasks(), start=1):
        p.pool.outcome(link, _ran(key, seq, run_s))
    assert _fill(p, link, "then") == depth


def test_an_outcome_waits_for_others_only_while_tasks_wait_for_a_worker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from cobalt_executors.agent import _agent

    monkeypatch.setattr(_agent, "LINGER_S", 2.0)
    busy = True
    connection = _agent._Connection(lambda: busy)
    hello = agent_pb2.AgentMessage(hello=agent_pb2.AgentHello(agent_id="a"))
    messages = connection.messages(hello)
    assert next(messages) is hello

    def outcome(key: str) -> agent_pb2.AgentMessage:
        return agent_pb2.AgentMessage(outcome=_outcome(key, 1))

    connection.send(outcome("a"))
    threading.Timer(0.1, connection.send, [outcome("b")]).start()
    together = next(messages)
    assert [o.task_key for o in together.outcomes.outcomes] == ["a", "b"]

    busy = False  # nothing waits: a worker idles until the controller hears
    connection.send(outcome("c"))
    threading.Timer(0.5, connection.send, [outcome("d")]).start()
    started = time.monotonic()
    alone = next(messages)
    assert [o.task_key for o in alone.outcomes.outcomes] == ["c"]
    assert time.monotonic() - started < 0.4
    assert [o.task_key for o in next(messages).outcomes.outcomes] == ["d"]
    connection.outgoing.put(None)  # the stream ends
    assert list(messages) == []


def test_an_executor_with_blob_dir_names_stored_payloads_where_its_agents_see_them(
    tmp_path: Path,
) -> None:
    from cobalt_common.payloads import BlobLocation
    from cobalt_executors.remote._executor import _relocated

    stored = PayloadRef(SHA, None, 10, BlobLocation.directory(tmp_path / "blobs"))
    url = PayloadRef(SHA, None, 10, BlobLocation("url", "https://bucket/key?sig"))
    task = _task()
    task.function = stored
    task.args = [
        TaskArg(0, "", stored),
        TaskArg(1, "", url),
        TaskArg(2, "", PayloadRef(SHA, b"x", 1)),
    ]
    moved = _relocated(task, "/mnt/cobalt/blobs")
    assert moved.function.location == BlobLocation.directory("/mnt/cobalt/blobs")
    assert [a.payload.location for a in moved.args] == [
        BlobLocation.directory("/mnt/cobalt/blobs"),
        url.location,
        None,
    ]
