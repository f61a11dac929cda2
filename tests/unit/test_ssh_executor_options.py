"""The SSH executor's options are checked where they are written, and only the
controller's config.toml may set them."""

from __future__ import annotations

from typing import Any

import pytest

from cobalt_common.errors import SpecError
from cobalt_common.hardware import HardwareSpec
from cobalt_executors.registry import create_executor
from cobalt_executors.ssh import SshExecutor
from cobalt_executors.ssh._executor import _declared_fits
from cobalt_executors.ssh._hosts import parse_hosts
from cobalt_executors.ssh._supervisor import HostAgent, host_label, split_address

pytestmark = pytest.mark.unit

HOST = {"host": "gpu1.lab.example", "user": "alice"}


def test_the_registry_makes_an_ssh_executor_from_its_hosts() -> None:
    executor = create_executor("ssh", "lab", {"hosts": [HOST], "tunnel": True, "workers": 2})
    assert isinstance(executor, SshExecutor)
    assert [h.address for h in executor.hosts] == ["alice@gpu1.lab.example:22"]


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "hosts must be a list of tables"),
        ({"hosts": [HOST], "tunnel": "yes"}, "tunnel must be true or false"),
        ({"hosts": [HOST], "workers": -1}, "workers must be a whole number"),
        ({"hosts": [HOST], "workers": True}, "workers must be a whole number"),
        ({"hosts": [{**HOST, "tunnel": 1}]}, "tunnel=1 is not true or false"),
        ({"hosts": [HOST], "cpus": 4}, "does not accept option(s) cpus"),
    ],
)
def test_bad_options_are_refused_at_once_saying_what_is_accepted(
    options: dict[str, Any], message: str
) -> None:
    with pytest.raises(SpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
        SshExecutor("lab", options)


def test_a_host_s_own_tunnel_setting_wins_over_the_executor_s() -> None:
    from cobalt_executors.base import AgentEndpoint
    from cobalt_executors.ssh._loop import LoopRunner
    from cobalt_executors.ssh._supervisor import AgentLaunch

    hosts = parse_hosts([HOST, {**HOST, "host": "gpu2", "tunnel": False}], executor="lab")
    launch = AgentLaunch("lab", AgentEndpoint("127.0.0.1:1", "", lambda *_: ""), tunnel=True)
    runner = LoopRunner()
    try:
        first, second = (HostAgent(h, launch, runner, lambda _: False) for h in hosts)
        assert (first.tunnel, second.tunnel) == (True, False)
        assert first.agent_id != second.agent_id
        again = HostAgent(hosts[0], launch, runner, lambda _: False)
        assert again.agent_id == first.agent_id, "a host's agent id is stable"
    finally:
        runner.close()


def test_labels_and_addresses_are_plain_names_and_split_for_ipv6() -> None:
    (spec,) = parse_hosts([{"host": "::1", "user": "bo", "port": 2222}], executor="lab")
    assert spec.address == "bo@[::1]:2222"
    assert host_label(spec) == "bo@::1:2222"
    assert split_address("[::1]:50051") == ("::1", 50051)
    assert split_address("head.example:7") == ("head.example", 7)


def test_declared_capacity_refuses_what_cannot_fit_and_counts_the_undeclared_as_room() -> None:
    (declared,) = parse_hosts(
        [{**HOST, "cpus": 4, "memory": "8GB", "gpus": {"h100": 2}}], executor="lab"
    )
    (bare,) = parse_hosts([HOST], executor="lab")
    assert _declared_fits(declared, HardwareSpec(cpus=4, gpu="h100", gpus=2))
    assert not _declared_fits(declared, HardwareSpec(cpus=5))
    assert not _declared_fits(declared, HardwareSpec(memory_mb=9000))
    assert not _declared_fits(declared, HardwareSpec(gpu="h100", gpus=3))
    assert not _declared_fits(declared, HardwareSpec(gpu="l4", gpus=1))
    assert _declared_fits(bare, HardwareSpec(cpus=64, gpu="h100", gpus=8))
