"""The Ray executor follows the cluster's nodes as its driver reports them: a node
that joins gets an agent, an agent that ended is started again on its live node
after a pause, and the nodes seen last still count while the driver restarts.

The driver's channel is replaced by a list of the commands the executor sends, so
these run without Ray. A real second node cannot join the loopback test head:
Ray refuses extra nodes once it is confined to loopback (docs/executors-ray.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from cobalt_common.hardware import HardwareSpec
from cobalt_executors.base import AgentEndpoint, ExecutorContext
from cobalt_executors.ray import _executor
from cobalt_executors.ray._executor import RayExecutor

pytestmark = pytest.mark.unit

GIB = 2**30


def _node(node_id: str, cpus: float = 4.0, l4: int = 2) -> dict[str, Any]:
    return {
        "id": node_id,
        "ip": "127.0.0.1",
        "resources": {"CPU": cpus, "memory": 8.0 * GIB, "GPU_L4": float(l4)},
    }


class Recorded(RayExecutor):
    """A Ray executor whose driver is a list of the commands it is sent."""

    def __init__(self) -> None:
        super().__init__("cluster", {"address": "a:1", "gpu_resources": {"l4": "GPU_L4"}})
        self.sent: list[dict[str, Any]] = []

    def _keep_driver(self) -> None:
        self._reported.set()

    def _send(self, message: dict[str, Any]) -> None:
        self.sent.append(message)


@pytest.fixture
def executor(tmp_path: Path) -> Recorded:
    executor = Recorded()
    executor.setup(
        ExecutorContext(
            inline_limit=1024,
            report=lambda _: None,
            agents=AgentEndpoint("127.0.0.1:9", "", lambda ex, alloc, ttl: f"secret-{alloc}"),
            work_dir=tmp_path,
        )
    )
    return executor


def _starts(executor: Recorded) -> list[dict[str, Any]]:
    return [m for m in executor.sent if m["kind"] == "start"]


def test_a_node_that_joins_gets_one_agent_holding_its_resources(executor: Recorded) -> None:
    executor._on_nodes([_node("n1")])
    executor._on_nodes([_node("n1")])
    assert [m["node"] for m in _starts(executor)] == ["n1"], "one agent per node, once"
    executor._on_nodes([_node("n1"), _node("n2", cpus=2.0, l4=1)])
    first, second = _starts(executor)
    assert second["node"] == "n2"
    assert (second["cpus"], second["gpus"], second["resources"]) == (2.0, 0, {"GPU_L4": 1.0})
    assert second["memory_bytes"] == 8 * GIB
    assert "--emulate-gpus" in second["argv"] and '{"l4": 1}' in second["argv"]
    assert second["env"] == {"COBALT_AGENT_TOKEN": f"secret-{second['allocation']}"}
    assert not any("secret" in arg for arg in second["argv"]), "never on its command line"
    assert first["allocation"] != second["allocation"]


def test_an_agent_that_ended_is_started_again_after_a_pause_while_its_node_lives(
    executor: Recorded, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = [1000.0]
    monkeypatch.setattr(_executor.time, "monotonic", lambda: now[0])
    executor._on_nodes([_node("n1")])
    (first,) = _starts(executor)
    executor._on_ended(first["allocation"], "its Ray actor ended: node died")
    executor._on_nodes([_node("n1")])
    assert len(_starts(executor)) == 1, "not at once"
    now[0] += _executor.RESTART_AFTER_S
    executor._on_nodes([_node("n1")])
    second = _starts(executor)[1]
    assert second["node"] == "n1" and second["allocation"] != first["allocation"]


def test_what_no_reported_node_could_hold_is_refused_with_the_nodes_named(
    executor: Recorded,
) -> None:
    executor._on_nodes([_node("n1"), _node("n2", cpus=2.0, l4=1)])
    assert executor.can_ever_run(HardwareSpec(cpus=4, gpu="l4", gpus=2))
    assert not executor.can_ever_run(HardwareSpec(gpu="l4", gpus=3))
    assert executor.capacity_words(HardwareSpec(gpu="l4", gpus=3)) == (
        "Ray nodes: 2 CPUs, 8192 MB, 1 x l4 (emulated); 4 CPUs, 8192 MB, 2 x l4 (emulated)"
    )


def test_a_node_with_less_than_one_cpu_gets_no_agent(executor: Recorded) -> None:
    executor._on_nodes([_node("n1", cpus=0.5, l4=0)])
    assert _starts(executor) == []
