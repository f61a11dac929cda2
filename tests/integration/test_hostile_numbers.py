"""A real controller refuses hostile numbers in raw gRPC requests with INVALID_ARGUMENT,
naming the field, and keeps enforcing time limits afterwards.

The SDK never sends NaN or infinities; any other client can, so these requests
are made with the generated stub and the controller's token, as such a client would.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

import grpc
import pytest

import cobalt as ct
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from conftest import ControllerHome

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("controller_home")]

FUNCTION_SHA = "ab" * 32
NAN, INF = math.nan, math.inf


class Raw:
    """The controller's stub with its token, called as a non-SDK client would."""

    def __init__(self, home: ControllerHome) -> None:
        info = home.info()
        assert info is not None
        self.channel = grpc.insecure_channel(home.address)
        self.stub = pb_grpc.ControllerStub(self.channel)
        self.metadata = (("authorization", f"Bearer {info['token']}"),)

    def refusal(self, method: str, request: object) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as info:
            getattr(self.stub, method)(request, metadata=self.metadata, timeout=20)
        return info.value


@pytest.fixture
def raw(controller_home: ControllerHome) -> Iterator[Raw]:
    client = Raw(controller_home)
    yield client
    client.channel.close()


def one_task(hardware: pb.HardwareSpec, retries: int = 0) -> pb.DispatchCreateRequest:
    node = pb.Node(
        node_id=0,
        kind=pb.NODE_KIND_ELECTRON,
        name="poison",
        function_sha256=FUNCTION_SHA,
        hardware=hardware,
        retries=retries,
    )
    return pb.DispatchCreateRequest(name="hostile", nodes=[node], output_node=0)


@pytest.mark.parametrize(
    ("hardware", "retries", "named"),
    [
        (pb.HardwareSpec(cpus=1, time_limit_s=NAN), 0, "time_limit_s"),
        (pb.HardwareSpec(cpus=1, time_limit_s=INF), 0, "time_limit_s"),
        (pb.HardwareSpec(cpus=1, time_limit_s=-5), 0, "time_limit_s"),
        (pb.HardwareSpec(cpus=NAN), 0, "cpus"),
        (pb.HardwareSpec(cpus=INF), 0, "cpus"),
        (pb.HardwareSpec(cpus=1, memory_mb=2**64 - 1), 0, "memory_mb"),
        (pb.HardwareSpec(gpu="h100", gpus=2**32 - 1), 0, "gpus"),
        (pb.HardwareSpec(cpus=1), 2**32 - 1, "retries"),
    ],
    ids=[
        "nan-limit",
        "inf-limit",
        "negative-limit",
        "nan-cpus",
        "inf-cpus",
        "huge-memory",
        "huge-gpus",
        "huge-retries",
    ],
)
def test_a_dispatch_with_a_non_finite_or_huge_number_is_refused_naming_the_field(
    raw: Raw, hardware: pb.HardwareSpec, retries: int, named: str
) -> None:
    error = raw.refusal("DispatchCreate", one_task(hardware, retries))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert named in (error.details() or "")
    assert "node 0 ('poison')" in (error.details() or "")


@pytest.mark.parametrize("budget", [NAN, INF, -1.0])
def test_a_dispatch_with_a_non_finite_or_negative_budget_is_refused(
    raw: Raw, budget: float
) -> None:
    request = one_task(pb.HardwareSpec(cpus=1, time_limit_s=60))
    request.budget_usd = budget

    error = raw.refusal("DispatchCreate", request)

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "budget_usd" in (error.details() or "")


@pytest.mark.parametrize("wait_s", [NAN, INF])
def test_a_wait_that_is_not_finite_is_refused(raw: Raw, wait_s: float) -> None:
    request = one_task(pb.HardwareSpec(cpus=1))
    request.wait_s = wait_s
    create = raw.refusal("DispatchCreate", request)
    get = raw.refusal("DispatchGet", pb.DispatchGetRequest(dispatch_id="0" * 32, wait_s=wait_s))

    for error in (create, get):
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "wait_s" in (error.details() or "")


@pytest.mark.parametrize("since", [NAN, INF, -INF, -1.0, 1e300])
def test_a_cost_summary_since_nan_or_out_of_range_is_invalid_argument(
    raw: Raw, since: float
) -> None:
    error = raw.refusal("CostSummary", pb.CostSummaryRequest(since=since))

    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "since" in (error.details() or "")


def test_a_cost_summary_since_a_real_time_still_answers(raw: Raw) -> None:
    reply = raw.stub.CostSummary(
        pb.CostSummaryRequest(since=time.time() - 86400), metadata=raw.metadata, timeout=20
    )

    assert isinstance(reply, pb.CostSummaryResponse)


@ct.electron(time_limit=1)
def sleeps_too_long() -> str:
    time.sleep(30)
    return "never"


@ct.lattice
def over_time() -> str:
    return sleeps_too_long()


def test_time_limits_are_still_enforced_after_a_nan_limit_was_sent(raw: Raw) -> None:
    for _ in range(3):
        raw.refusal("DispatchCreate", one_task(pb.HardwareSpec(cpus=1, time_limit_s=NAN)))
        raw.refusal("DispatchCreate", one_task(pb.HardwareSpec(cpus=NAN, time_limit_s=60)))

    started = time.monotonic()
    result = ct.dispatch_sync(over_time, raise_on_failure=False)()

    assert result.status == ct.Status.TIMED_OUT
    assert time.monotonic() - started < 15


@pytest.mark.parametrize(
    ("sha256", "size", "field"),
    [("nope", 10, "sha256"), ("ab" * 32, -1, "size"), ("ab" * 32, 6 << 30, "size")],
)
def test_an_upload_url_for_a_bad_hash_or_size_is_refused(
    raw: Raw, sha256: str, size: int, field: str
) -> None:
    error = raw.refusal("BlobUploadUrl", pb.BlobUploadUrlRequest(sha256=sha256, size=size))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in (error.details() or "")


def test_a_blob_directory_gives_no_upload_url_so_outputs_go_through_the_controller(
    raw: Raw,
) -> None:
    answer = raw.stub.BlobUploadUrl(
        pb.BlobUploadUrlRequest(sha256="cd" * 32, size=10), metadata=raw.metadata, timeout=20
    )
    assert (answer.stored, answer.url) == (False, "")
