"""Requests whose bodies do not parse, sent with a valid token: refused, and logged sparingly."""

from __future__ import annotations

import logging
import random
import time
from concurrent import futures
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from cobalt import _client
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_controller._lograte import GRPC_LOGGERS, RateLimit

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import ControllerHome

pytestmark = pytest.mark.integration

REQUESTS = 200
METHODS = ("DispatchGet", "TaskList", "NodeGet", "BlobHas", "CostSummary")


def garbage(rng: random.Random) -> bytes:
    """Bytes no message parses: field number 0 with wire type 7, then noise."""
    return b"\x07" + rng.randbytes(rng.randrange(1, 512))


def test_many_unparseable_requests_with_a_valid_token_grow_the_log_by_a_bounded_amount(
    make_controller_home: Callable[..., ControllerHome],
) -> None:
    home = make_controller_home()
    home.start()
    client = _client.get_client()
    log = home.path / "controller.log"
    time.sleep(0.5)  # let start-up lines land first
    size = log.stat().st_size
    rng = random.Random(20240917)
    codes = set()
    with grpc.insecure_channel(home.address) as channel:
        calls = {
            name: channel.unary_unary(
                f"/cobalt.v1.Controller/{name}",
                request_serializer=lambda body: body,
                response_deserializer=lambda body: body,
            )
            for name in METHODS
        }
        for i in range(REQUESTS):
            with pytest.raises(grpc.RpcError) as refused:
                calls[METHODS[i % len(METHODS)]](garbage(rng), metadata=client.metadata, timeout=10)
            codes.add(refused.value.code())
    assert codes <= {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.INTERNAL}, codes

    assert client.status().pid == home.pid, "the controller still answers"
    grown = log.stat().st_size - size
    print(f"controller.log grew by {grown} bytes for {REQUESTS} unparseable requests")
    # One traceback is about 850 bytes: all of them would be some 170 KB.
    assert grown < 16_000, home.log_tail()


def test_grpcios_own_tracebacks_for_unparseable_requests_and_handler_errors_are_rate_limited(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Whatever reaches grpcio's logging (a request no check caught, an exception a
    handler let escape) is limited to a few records an interval, plus one count."""

    def fail(request: Any, context: grpc.ServicerContext) -> bytes:
        raise RuntimeError("a handler bug")

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers(
        [
            grpc.method_handlers_generic_handler(
                "test.Plain",
                {
                    "Parse": grpc.unary_unary_rpc_method_handler(
                        lambda request, context: b"",
                        request_deserializer=pb.DispatchGetRequest.FromString,
                        response_serializer=lambda body: body,
                    ),
                    "Fail": grpc.unary_unary_rpc_method_handler(
                        fail, response_serializer=lambda body: body
                    ),
                },
            )
        ]
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    counts: list[str] = []
    limit = RateLimit(burst=5, interval_s=3600, report=counts.append)
    loggers = [logging.getLogger(name) for name in GRPC_LOGGERS]
    saved = [logger.filters for logger in loggers]
    for logger in loggers:
        logger.filters = [limit]  # this limit alone, whatever else this process installed
    rng = random.Random(7)
    try:
        with caplog.at_level(logging.ERROR), grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            parse = channel.unary_unary("/test.Plain/Parse", request_serializer=lambda b: b)
            failing = channel.unary_unary("/test.Plain/Fail", request_serializer=lambda b: b)
            for i in range(REQUESTS):
                with pytest.raises(grpc.RpcError):
                    (parse if i % 2 else failing)(garbage(rng), timeout=10)
        limit.flush()
    finally:
        for logger, filters in zip(loggers, saved, strict=True):
            logger.filters = filters
        server.stop(None)
    logged = [r for r in caplog.records if r.name in GRPC_LOGGERS]
    assert len(logged) == 5
    assert all(r.exc_info for r in logged), "those few keep their tracebacks"
    assert len(counts) == 1
    assert counts[0].startswith(f"{REQUESTS - 5} more failed requests were not logged")
