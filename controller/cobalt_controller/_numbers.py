"""Checks of the numbers a request carries, before any of them is used.

A wire message is not the SDK: any client can send NaN, an infinity or the
largest value a field holds. One NaN deadline once disabled every time limit
of a controller, so each number is checked where a request enters, and
refused with a :class:`SpecError` (``INVALID_ARGUMENT``) naming its field.

Example:
    >>> wait_seconds(2.5, "wait_s")
    2.5
    >>> wait_seconds(float("nan"), "wait_s")
    Traceback (most recent call last):
    ...
    cobalt_common.errors.SpecError: wait_s=nan must be a finite number of seconds from 0 to 86400.
"""

from __future__ import annotations

import math
from datetime import datetime

from cobalt_common.errors import SpecError
from cobalt_common.hardware import MAX_RETRIES, HardwareSpec
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_from_pb

MAX_WAIT_S = 86400.0
"""The longest one call may block; the SDK waits in much shorter chunks."""

LATEST_SINCE = datetime(9999, 1, 1).timestamp()
"""The latest ``since`` a cost summary accepts: a date still has four digits."""


def wait_seconds(value: float, field: str) -> float:
    """A request's wait: finite, from 0 to :data:`MAX_WAIT_S` seconds."""
    if not (math.isfinite(value) and 0 <= value <= MAX_WAIT_S):
        raise SpecError(
            f"{field}={value!r} must be a finite number of seconds from 0 to {MAX_WAIT_S:g}."
        )
    return value


def since_time(value: float, field: str = "since") -> float:
    """A unix time to count from: finite, from 0 (all) to the year 9999."""
    if not (math.isfinite(value) and 0 <= value < LATEST_SINCE):
        raise SpecError(
            f"{field}={value!r} must be a unix time from 0 (everything) to {LATEST_SINCE:.0f}."
        )
    return value


def hardware(msg: pb.HardwareSpec, where: str) -> HardwareSpec:
    """The spec a message carries; a bad number is refused naming ``where`` and its field."""
    try:
        return spec_from_pb(msg)
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None


def retries(value: int, where: str) -> int:
    """A task's retries: a whole number from 0 to :data:`MAX_RETRIES`."""
    if not 0 <= value <= MAX_RETRIES:
        raise SpecError(f"{where}: retries={value!r} must be from 0 to {MAX_RETRIES}.")
    return value
