"""The SSH executor's ``hosts`` option is checked where it is written, host and field named."""

from __future__ import annotations

import doctest
import getpass
import pickle
from pathlib import Path
from typing import Any

import pytest

from cobalt_common.errors import HostAuthenticationError, HostError, SpecError
from cobalt_executors.ssh import _hosts, _loop, _process
from cobalt_executors.ssh._hosts import ACCEPT_ANY_HOST_KEY, HOST_FIELDS, HostSpec, parse_hosts
from cobalt_executors.ssh._process import group_leader_command

pytestmark = pytest.mark.unit

ACCEPTED = "accepted fields are: " + ", ".join(sorted(HOST_FIELDS)) + "."


def one(**table: Any) -> HostSpec:
    return parse_hosts([table], executor="lab")[0]


def test_a_host_with_only_its_name_gets_the_defaults(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = one(host="gpu1.lab.example")
    assert spec == HostSpec(
        host="gpu1.lab.example",
        port=22,
        user=getpass.getuser(),
        key_file=None,
        known_hosts=tmp_path / ".ssh" / "known_hosts",
        python="python3",
    )
    assert spec.address == f"{getpass.getuser()}@gpu1.lab.example:22"
    assert spec.checks_host_key


def test_every_field_is_parsed_into_its_canonical_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    spec = one(
        host="[fe80::1]",
        port=2222,
        user="alice",
        key_file="~/.ssh/lab",
        known_hosts="/etc/ssh/lab_known_hosts",
        python="/opt/py/bin/python",
        work_dir="~/cobalt",
        cpus=8,
        memory="64GB",
        gpus={"H100": 2, "a100": 1},
    )
    assert spec == HostSpec(
        host="fe80::1",
        port=2222,
        user="alice",
        key_file=tmp_path / ".ssh" / "lab",
        known_hosts=Path("/etc/ssh/lab_known_hosts"),
        python="/opt/py/bin/python",
        work_dir="~/cobalt",
        cpus=8.0,
        memory_mb=65536,
        gpus=(("a100-40gb", 1), ("h100", 2)),
    )
    assert spec.address == "alice@[fe80::1]:2222"


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("host", "alice@gpu1", "is not a DNS name or an IP address (put the login name in user"),
        ("host", "-oProxyCommand=x", "is not a DNS name"),
        ("host", "gpu 1", "is not a DNS name"),
        ("host", "bad..name", "is not a DNS name"),
        ("port", 0, "is not a port number from 1 to 65535"),
        ("port", 65536, "is not a port number"),
        ("port", "22", "is not a port number"),
        ("port", True, "is not a port number"),
        ("user", "-l root", "is not a login name"),
        ("user", "al ice", "is not a login name"),
        ("python", "", "must be a non-empty path"),
        ("python", "python3\nrm -rf /", "without control characters"),
        ("work_dir", 3, "must be a non-empty path"),
        ("key_file", ["a"], "must be a non-empty path"),
        ("cpus", 0, "is not a number of CPUs above 0"),
        ("cpus", float("nan"), "is not a number of CPUs"),
        ("gpus", {"h100": 0}, "has count 0 for h100, not from 1 to 1024"),
        ("gpus", ["h100"], "must be a table of GPU type to count"),
        ("known_hosts", "none", f'only by known_hosts = "{ACCEPT_ANY_HOST_KEY}"'),
        ("known_hosts", False, "host key checking is turned off only by"),
    ],
)
def test_an_invalid_field_is_refused_naming_the_host_and_the_field(
    field: str, value: object, problem: str
) -> None:
    table = {"host": "gpu1", field: value}
    with pytest.raises(SpecError) as caught:
        parse_hosts([{"host": "gpu0"}, table], executor="lab")
    message = str(caught.value)
    named = value if field == "host" else "gpu1"
    assert message.startswith(f"executor 'lab': hosts[1] (host {named!r}): {field}={value!r} ")
    assert problem in message
    assert message.endswith(ACCEPTED)


def test_memory_and_gpu_types_are_checked_with_the_hardware_vocabulary() -> None:
    with pytest.raises(SpecError, match=r"hosts\[0\] \(host 'gpu1'\): memory='lots' is not"):
        one(host="gpu1", memory="lots")
    with pytest.raises(SpecError, match=r"hosts\[0\] \(host 'gpu1'\): gpus"):
        one(host="gpu1", gpus={"tpu": 1})


def test_an_unknown_field_is_refused_with_the_accepted_ones() -> None:
    with pytest.raises(SpecError) as caught:
        one(host="gpu1", hostname="gpu1", pasword="x")
    assert str(caught.value) == (
        f"executor 'lab': hosts[0] (host 'gpu1'): unknown field(s) hostname, pasword; {ACCEPTED}"
    )


def test_a_table_without_a_host_is_refused() -> None:
    with pytest.raises(SpecError, match=r"hosts\[0\]: the host field is required"):
        one(port=22)


@pytest.mark.parametrize("value", [[], "gpu1", {"host": "gpu1"}, None, ["gpu1"]])
def test_hosts_must_be_a_non_empty_list_of_tables(value: object) -> None:
    with pytest.raises(SpecError, match="must be a"):
        parse_hosts(value, executor="lab")


def test_the_same_login_twice_is_refused() -> None:
    with pytest.raises(SpecError, match=r"hosts\[2\] repeats al@gpu1:22 of hosts\[0\]"):
        parse_hosts(
            [
                {"host": "gpu1", "user": "al"},
                {"host": "gpu1", "port": 2},
                {"host": "gpu1", "user": "al"},
            ],
            executor="lab",
        )


def test_host_key_checking_is_off_only_when_asked_for_by_name() -> None:
    spec = one(host="gpu1", known_hosts=ACCEPT_ANY_HOST_KEY)
    assert spec.known_hosts == ACCEPT_ANY_HOST_KEY and not spec.checks_host_key


def test_a_remote_command_refuses_what_it_cannot_quote() -> None:
    with pytest.raises(SpecError, match="non-empty list of strings"):
        group_leader_command([])
    with pytest.raises(SpecError, match="'A B' is not an environment variable name"):
        group_leader_command(["true"], {"A B": "1"})


@pytest.mark.parametrize("module", [_hosts, _loop, _process])
def test_the_examples_in_the_docstrings_run(module: object) -> None:
    assert doctest.testmod(module).failed == 0  # type: ignore[arg-type]


def test_host_errors_cross_processes_with_the_host_they_name() -> None:
    error = HostAuthenticationError("al@gpu1:22 refused the key", host="al@gpu1:22")
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is HostAuthenticationError and isinstance(copy, HostError)
    assert (str(copy), copy.host, copy.reason) == (str(error), "al@gpu1:22", "auth_refused")
