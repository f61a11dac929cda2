"""What the fuzz tests share: the controller they fuzz, its deployment, and its vitals.

The fuzz tests themselves are ``tests/integration/test_fuzz_grpc.py`` and
``test_fuzz_http.py``; ``COBALT_FUZZ_SEED`` replays a run of either.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import pytest
from conftest import DEPLOY_CONFIG_TOML

import cobalt as ct
from cobalt._client import get_client
from cobalt_common.v1 import controller_pb2 as pb

if TYPE_CHECKING:
    from conftest import ControllerHome


SEED = int(os.environ.get("COBALT_FUZZ_SEED", "20240917"))
SERVICE = pb.DESCRIPTOR.services_by_name["Controller"]
PER_METHOD = 80
"""gRPC inputs per method (and as many again of raw bytes)."""
HTTP_PER_SURFACE = 160
RSS_GROWTH_MB = 200
"""Measured at 110 to 135 MB after the gRPC batch: its 1 to 4 MB strings, eight calls at
a time, raise the allocator's high-water mark (86 MB with a third of the inputs), and the
HTTP batches add nothing."""
FD_GROWTH = 50
LOG_GROWTH_MB = 20

NEVER_WITH_THE_TOKEN = {"ControllerStop"}
"""Called only with a wrong token: with the right one it stops the controller."""
CHANGES_A_DEPLOYMENT = {
    "DeploymentCreate",
    "DeploymentTeardown",
    "DeploymentTokenRotate",
    "ReplicaReady",
}
"""Never given the name of the deployment that the HTTP fuzzing goes through."""

# -- the controller and its vitals -----------------------------------------------------


@ct.electron
def add_one(x: int) -> int:
    return x + 1


@ct.lattice
def tiny(x: int) -> int:
    return add_one(x)


@ct.service(name="fuzzecho", cpus=0.25, min_replicas=1, max_replicas=1, max_body_bytes=4096)
def fuzzecho() -> dict[str, Any]:
    return {}


@fuzzecho.endpoint("/echo")
def echo(text: str, times: int = 1) -> dict[str, Any]:
    return {"text": text * max(0, min(times, 3))}


def token_of(home: ControllerHome) -> str:
    info = home.info()
    assert info is not None
    return str(info["token"])


def rss_kb(pid: int) -> int:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fd_count(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


@dataclass
class Vitals:
    """The controller's memory, descriptors and log, from the start of the fuzzing."""

    home: ControllerHome
    rss_kb: int = 0
    fds: int = 0
    log_bytes: int = 0
    peak_rss_kb: int = 0
    peak_fds: int = 0
    sent: Counter[str] = field(default_factory=Counter)
    dispatch_ids: list[str] = field(default_factory=list)

    def log_size(self) -> int:
        try:
            return (self.home.path / "controller.log").stat().st_size
        except OSError:
            return 0

    def measure(self) -> tuple[int, int]:
        rss, fds = rss_kb(self.home.pid), fd_count(self.home.pid)
        self.peak_rss_kb, self.peak_fds = max(self.peak_rss_kb, rss), max(self.peak_fds, fds)
        return rss, fds

    def begin(self) -> None:
        self.check_alive()
        self.rss_kb, self.fds = self.measure()
        self.log_bytes = self.log_size()

    def check_alive(self) -> None:
        client = get_client()
        status = client.call(client.stub.ControllerStatus, pb.ControllerStatusRequest(), timeout=20)
        assert status.pid == self.home.pid
        result = ct.dispatch_sync(tiny)(41)
        assert result.status == ct.Status.COMPLETED and result.result == 42, result.error
        self.dispatch_ids.append(result.dispatch_id)

    def check(self, batch: str) -> None:
        """The controller still serves, and has not grown out of bounds since :meth:`begin`."""
        self.check_alive()
        rss, fds = self.measure()
        log_growth = self.log_size() - self.log_bytes
        print(
            f"[fuzz seed={SEED}] after {batch}: sent {dict(self.sent)}; controller RSS "
            f"{self.rss_kb // 1024} -> {rss // 1024} MB (peak {self.peak_rss_kb // 1024} MB), "
            f"fds {self.fds} -> {fds} (peak {self.peak_fds}), log +{log_growth // 1024} KiB"
        )
        assert rss - self.rss_kb < RSS_GROWTH_MB * 1024, f"RSS grew {rss - self.rss_kb} KiB"
        assert fds - self.fds < FD_GROWTH, f"open descriptors grew from {self.fds} to {fds}"
        assert log_growth < LOG_GROWTH_MB << 20, f"controller.log grew {log_growth} bytes"


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerHome]:
    from conftest import ControllerHome

    print(f"[fuzz] seed {SEED} (set COBALT_FUZZ_SEED to replay another)")
    with ControllerHome(tmp_path_factory.mktemp("cobalt-fuzz"), DEPLOY_CONFIG_TOML).serving() as h:
        yield h


@pytest.fixture(scope="module")
def deployment(home: ControllerHome) -> Iterator[ct.Deployment]:
    with ct.deploy(fuzzecho)() as dep:
        yield dep


@pytest.fixture(scope="module")
def vitals(home: ControllerHome, deployment: ct.Deployment) -> Vitals:
    vitals = Vitals(home)
    vitals.begin()
    return vitals
