"""Rate-limited logging of failed requests.

grpcio logs a full traceback for every request it cannot parse ("Exception
deserializing message!") and for every exception a handler lets escape. A
client that sends garbage with a valid token could fill the disk that way:
one fuzzing run wrote 24,653 tracebacks, 21 MB of log. :class:`RateLimit`
lets the first few such records of each interval through in full and counts
the rest, reported as one line when the interval ends.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

log = logging.getLogger("cobalt.controller")

GRPC_LOGGERS = ("grpc._common", "grpc._server")
"""Where grpcio logs unparseable requests and exceptions escaping handlers."""


class RateLimit(logging.Filter):
    """A logging filter that passes ``burst`` records per ``interval_s`` seconds.

    The records it holds back are counted; when the interval ends, ``report``
    receives one line saying how many there were and what the first said.

    Args:
        burst: records passed in full per interval.
        interval_s: the length of an interval.
        report: called with the line; by default a warning in the controller's log.
        clock: monotonic seconds (a parameter for tests).
    """

    def __init__(
        self,
        burst: int = 5,
        interval_s: float = 60.0,
        report: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self.burst = burst
        self.interval_s = interval_s
        self._report = report or log.warning
        self._clock = clock
        self._lock = threading.Lock()
        self._window_end = 0.0
        self._passed = 0
        self._held = 0
        self._first_held = ""
        self._timer: threading.Timer | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        now = self._clock()
        with self._lock:
            line = self._roll(now)
            if self._passed < self.burst:
                self._passed += 1
                passed = True
            else:
                passed = False
                if not self._held:
                    self._first_held = record.getMessage()[:200]
                    self._schedule(self._window_end - now)
                self._held += 1
        if line:
            self._report(line)
        return passed

    def flush(self) -> None:
        """Reports the records held back so far, if any, and starts a new interval."""
        with self._lock:
            line = self._summary()
            self._window_end = 0.0
        if line:
            self._report(line)

    def _roll(self, now: float) -> str:
        """Starts a new interval if the current one has ended; returns its summary."""
        if now < self._window_end:
            return ""
        line = self._summary()
        self._window_end = now + self.interval_s
        self._passed = 0
        return line

    def _summary(self) -> str:
        if not self._held:
            return ""
        line = (
            f"{self._held} more failed requests were not logged in full "
            f"(at most {self.burst} per {self.interval_s:g} s); the first said: "
            f"{self._first_held}"
        )
        self._held = 0
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        return line

    def _schedule(self, delay_s: float) -> None:
        """Reports this interval's count when it ends, even if nothing else is logged."""
        timer = threading.Timer(max(delay_s, 0.0), self._on_timer)
        timer.daemon = True
        self._timer = timer
        timer.start()

    def _on_timer(self) -> None:
        with self._lock:
            line = self._summary() if self._clock() >= self._window_end - 0.01 else ""
        if line:
            self._report(line)


_grpc_limit = RateLimit()


def limit_grpc_error_logs() -> None:
    """Rate-limits what grpcio logs about failed requests (idempotent)."""
    for name in GRPC_LOGGERS:
        logger = logging.getLogger(name)
        if _grpc_limit not in logger.filters:
            logger.addFilter(_grpc_limit)
