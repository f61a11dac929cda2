"""Rate-limited logging of failed requests: a few in full, then a count per interval."""

from __future__ import annotations

import logging
import threading

import pytest

from cobalt_controller._lograte import GRPC_LOGGERS, RateLimit, limit_grpc_error_logs

pytestmark = pytest.mark.unit


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _record(message: str) -> logging.LogRecord:
    return logging.LogRecord("grpc._common", logging.ERROR, __file__, 1, message, None, None)


def test_the_first_records_of_an_interval_pass_and_the_rest_are_counted_in_one_line() -> None:
    clock, lines = Clock(), []
    limit = RateLimit(burst=3, interval_s=60, report=lines.append, clock=clock)
    passed = [limit.filter(_record(f"Exception deserializing message! #{i}")) for i in range(200)]
    assert passed == [True] * 3 + [False] * 197
    assert lines == []
    clock.now += 61
    assert limit.filter(_record("a new interval"))
    assert len(lines) == 1
    assert lines[0].startswith("197 more failed requests were not logged in full")
    assert "Exception deserializing message! #3" in lines[0]


def test_a_quiet_interval_reports_nothing() -> None:
    clock, lines = Clock(), []
    limit = RateLimit(burst=3, interval_s=60, report=lines.append, clock=clock)
    for _ in range(5):
        assert limit.filter(_record("rare"))
        clock.now += 30
    limit.flush()
    assert lines == []


def test_the_count_is_reported_when_the_interval_ends_even_if_nothing_else_is_logged() -> None:
    reported = threading.Event()
    lines: list[str] = []

    def report(line: str) -> None:
        lines.append(line)
        reported.set()

    limit = RateLimit(burst=1, interval_s=0.2, report=report)
    assert limit.filter(_record("first"))
    assert not limit.filter(_record("second"))
    assert reported.wait(10), "no count after the interval"
    assert lines == [
        "1 more failed requests were not logged in full (at most 1 per 0.2 s); "
        "the first said: second"
    ]


def test_the_grpc_loggers_are_limited_once_however_often_it_is_asked() -> None:
    limit_grpc_error_logs()
    limit_grpc_error_logs()
    for name in GRPC_LOGGERS:
        assert sum(isinstance(f, RateLimit) for f in logging.getLogger(name).filters) == 1
