"""What a deployment is, as plain data shared by the SDK and the controller.

The SDK builds a :class:`Manifest` from a service's decorators and sends it as
JSON next to the pickled service; the controller stores it and runs the
gateway and the autoscaler from it without ever unpickling anything.

Example:
    >>> a = Autoscaling(min_replicas=0, max_replicas=8, target_concurrency=8)
    >>> m = Manifest(name="classifier", routes=(Route("predict", "/predict"),), autoscaling=a)
    >>> Manifest.from_json(m.to_json()) == m
    True
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import timedelta
from typing import Any

from cobalt_common.checks import brief
from cobalt_common.errors import SpecError
from cobalt_common.hardware import parse_duration_s

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "Autoscaling",
    "Batch",
    "DurationLike",
    "Manifest",
    "Route",
    "Schedule",
    "deploy_task_key",
    "deploy_task_service",
    "validate_deployment_name",
]

DurationLike = int | float | str | timedelta
"""Seconds as a number, text such as ``"60s"``, ``"9h"``, or a timedelta."""

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_COUNT = 1_000_000
# The most replicas, requests in flight or queued, and requests per second a
# manifest may name: numbers from the wire are bounded before anything sizes by them.
MAX_SECONDS = 366 * 86400.0
# The longest delay or timeout a manifest may name: a year.
_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")
_ROUTE = re.compile(r"^/[A-Za-z0-9_\-./]*$")


_DEPLOY_TASK = "cobalt._deploy.deploy "


def deploy_task_key(name: str) -> str:
    """The function key that marks a lattice's task deploying service ``name``.

    The controller gives that task's credential the right to create and read
    deployment ``name``, and no other.
    """
    return _DEPLOY_TASK + name


def deploy_task_service(function_key: str) -> str:
    """The service a task with this function key deploys; "" when it deploys none.

    >>> deploy_task_service(deploy_task_key("classifier"))
    'classifier'
    >>> deploy_task_service("my_module.train")
    ''
    """
    if not function_key.startswith(_DEPLOY_TASK):
        return ""
    name = function_key[len(_DEPLOY_TASK) :]
    return name if _NAME.match(name) else ""


def validate_deployment_name(name: str) -> str:
    """Deployment names are URL path segments: lowercase letters, digits and dashes."""
    if not isinstance(name, str) or not _NAME.match(name):
        suggestion = re.sub(r"[^a-z0-9-]+", "-", str(name).lower()).strip("-")[:63] or "my-service"
        raise SpecError(
            f"deployment name {brief(str(name))} is not valid: use 1-63 lowercase letters, "
            "digits and dashes, starting and ending with a letter or digit "
            f"(for example {suggestion!r})."
        )
    return name


def _seconds(value: DurationLike | None, option: str, *, allow_zero: bool = True) -> float:
    if value is None:
        raise SpecError(f"{option} must be a duration such as 30 or '60s', not None.")
    seconds = parse_duration_s(value, option=option) if not _is_zero(value) else 0.0
    if seconds == 0 and not allow_zero:
        raise SpecError(f"{option} must be longer than 0 seconds.")
    if seconds > MAX_SECONDS:
        raise SpecError(f"{option} must be at most {MAX_SECONDS:g} seconds (a year).")
    return seconds


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _count(value: Any, option: str, *, minimum: int = 0, maximum: int = MAX_COUNT) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise SpecError(
            f"{option} must be a whole number >= {minimum} and <= {maximum}, not {value!r}."
        )
    return value


def _positive(value: Any, option: str, *, upper: float = MAX_COUNT) -> float:
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not math.isfinite(value)
        or not 0 < value <= upper
    ):
        raise SpecError(f"{option} must be a number above 0 and at most {upper:g}, not {value!r}.")
    return float(value)


@dataclass(frozen=True, slots=True)
class Schedule:
    """Keeps at least ``min_replicas`` running for ``duration`` from each time
    ``cron`` fires: ``Schedule(cron="0 9 * * 1-5", min_replicas=10, duration="9h")``
    holds 10 replicas from 9:00 to 18:00 on weekdays.

    Args:
        cron: five fields (minute hour day month weekday), in ``timezone``.
        min_replicas: the floor while the window is open; ``max_replicas`` still caps it.
        duration: how long each window stays open.
        timezone: an IANA name such as ``"Europe/Paris"``; default the controller's
            local time.
    """

    cron: str
    min_replicas: int
    duration: DurationLike = "1h"
    timezone: str = ""

    def __post_init__(self) -> None:
        from cobalt_common._cron import validate_cron

        validate_cron(self.cron, option="Schedule(cron=...)")
        _count(self.min_replicas, "Schedule(min_replicas=...)")
        object.__setattr__(
            self, "duration", _seconds(self.duration, "Schedule(duration=...)", allow_zero=False)
        )
        if self.timezone:
            from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

            try:
                ZoneInfo(self.timezone)
            except (ZoneInfoNotFoundError, ValueError) as exc:
                raise SpecError(
                    f"Schedule(timezone={self.timezone!r}) is not a known time zone; "
                    "use an IANA name such as 'Europe/Paris' or 'UTC'."
                ) from exc

    @property
    def duration_s(self) -> float:
        return float(self.duration)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Autoscaling:
    """How many replicas a deployment runs, and when that changes.

    Policies combine: the autoscaler asks each policy that is set for a
    replica count and takes the largest, then holds it between
    ``min_replicas`` and ``max_replicas`` (and above any open schedule's
    floor). Every decision is recorded with its inputs and reason
    (``cobalt deployments events <name>``).

    Args:
        min_replicas: never fewer (default 0: scale to zero when idle).
        max_replicas: never more (default 4).
        target_concurrency: ongoing requests per replica the autoscaler aims for
            (default 8). Replicas = ceil(ongoing / target).
        max_concurrency: requests one replica is given at once; more wait in the
            gateway's queue (default: 2 x ``target_concurrency``).
        requests_per_second: if set, also aim for at most this many requests per
            second per replica.
        utilization: if set (0-1], also add a replica while the mean CPU
            utilization of replicas (GPU utilization from ``nvidia-smi`` when
            they have GPUs) is above it, and remove one while it is under half of it.
        upscale_delay: how long a higher count must be wanted before replicas are
            added (default 0 s: at once).
        downscale_delay: how long a lower count must be wanted before replicas are
            removed (default 30 s), so that replicas do not flap.
        scaledown_window: with ``min_replicas=0``, how long without any request
            before the last replica stops (default 60 s).
        schedules: windows with a higher floor, e.g. 10 replicas at 9:00 on weekdays.
        policy: ``policy(metrics) -> replicas``, your own rule. It runs inside a
            replica (the controller never runs your code), so it is consulted
            while at least one replica runs; from zero, a request or a schedule
            starts the first one. ``metrics`` is a dict with ``replicas``,
            ``ongoing``, ``queued``, ``rps``, ``p50_ms``, ``p99_ms`` and
            ``utilization``.
        queue_timeout: how long a request may wait for a replica, including a
            cold start from zero (default 60 s); then it gets 503.
        max_queue: requests that may wait at once (default 1000); more get 503
            with ``Retry-After``.
    """

    min_replicas: int = 0
    max_replicas: int = 4
    target_concurrency: float = 8
    max_concurrency: int = 0
    requests_per_second: float | None = None
    utilization: float | None = None
    upscale_delay: DurationLike = 0
    downscale_delay: DurationLike = 30
    scaledown_window: DurationLike = 60
    schedules: Sequence[Schedule] = ()
    policy: Callable[[dict[str, Any]], int] | None = field(default=None, compare=False)
    queue_timeout: DurationLike = 60
    max_queue: int = 1000

    def __post_init__(self) -> None:
        o = "Autoscaling"
        _count(self.min_replicas, f"{o}(min_replicas=...)")
        _count(self.max_replicas, f"{o}(max_replicas=...)", minimum=1)
        if self.min_replicas > self.max_replicas:
            raise SpecError(
                f"{o}(min_replicas={self.min_replicas}) is above "
                f"max_replicas={self.max_replicas}; raise max_replicas or lower min_replicas."
            )
        _positive(self.target_concurrency, f"{o}(target_concurrency=...)")
        _count(self.max_concurrency, f"{o}(max_concurrency=...)")
        if self.max_concurrency == 0:
            default = max(1, math.ceil(2 * self.target_concurrency))
            object.__setattr__(self, "max_concurrency", default)
        if self.requests_per_second is not None:
            _positive(self.requests_per_second, f"{o}(requests_per_second=...)")
        if self.utilization is not None:
            _positive(self.utilization, f"{o}(utilization=...)", upper=1.0)
        for name in ("upscale_delay", "downscale_delay", "scaledown_window"):
            object.__setattr__(self, name, _seconds(getattr(self, name), f"{o}({name}=...)"))
        object.__setattr__(
            self, "queue_timeout", _seconds(self.queue_timeout, f"{o}(queue_timeout=...)")
        )
        _count(self.max_queue, f"{o}(max_queue=...)")
        schedules = tuple(self.schedules)
        for s in schedules:
            if not isinstance(s, Schedule):
                raise SpecError(
                    f"{o}(schedules=...) takes ct.Schedule(cron=..., min_replicas=..., "
                    f"duration=...) items, not {type(s).__name__}."
                )
        object.__setattr__(self, "schedules", schedules)
        if self.policy is not None and not callable(self.policy):
            raise SpecError(f"{o}(policy=...) must be a function policy(metrics) -> replicas.")

    def seconds(self, name: str) -> float:
        """A duration option in seconds (they are stored as seconds once validated)."""
        return float(getattr(self, name))

    def to_dict(self) -> dict[str, Any]:
        data = {k: getattr(self, k) for k in self.__slots__ if k not in ("policy", "schedules")}
        data["schedules"] = [
            {
                "cron": s.cron,
                "min_replicas": s.min_replicas,
                "duration_s": s.duration_s,
                "timezone": s.timezone,
            }
            for s in self.schedules
        ]
        data["custom_policy"] = self.policy is not None
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Autoscaling:
        data = dict(data)
        custom = bool(data.pop("custom_policy", False))
        schedules = tuple(
            Schedule(
                cron=s["cron"],
                min_replicas=s["min_replicas"],
                duration=s["duration_s"],
                timezone=s.get("timezone", ""),
            )
            for s in data.pop("schedules", ())
        )
        made = cls(**data, schedules=schedules)
        return replace(made, policy=_remote_policy) if custom else made


def _remote_policy(metrics: dict[str, Any]) -> int:
    """Stands for a user's policy on the controller side, where it is never unpickled."""
    raise RuntimeError("a custom policy runs inside a replica")


@dataclass(frozen=True, slots=True)
class Batch:
    """Coalesce concurrent requests to one endpoint into one call over lists.

    Each client still sends one item; a replica gathers the requests that
    arrive together and calls the endpoint once with each body field as a
    list, then sends element ``i`` of the returned list back to request ``i``.
    A replica is given at most ``Autoscaling.max_concurrency`` requests at
    once, so that also bounds a batch.

    Args:
        max_size: the most requests in one call (default 32).
        max_wait_ms: how long the first waiting request waits for others
            before its batch runs with fewer (default 5 ms; 0: run with
            whatever is waiting).

    Example:
        >>> Batch(max_size=8)
        Batch(max_size=8, max_wait_ms=5.0)
    """

    max_size: int = 32
    max_wait_ms: float = 5.0

    def __post_init__(self) -> None:
        _count(self.max_size, "Batch(max_size=...)", minimum=1)
        wait = self.max_wait_ms
        if (
            isinstance(wait, bool)
            or not isinstance(wait, int | float)
            or not math.isfinite(wait)
            or wait < 0
        ):
            raise SpecError(
                f"Batch(max_wait_ms=...) must be a number of milliseconds >= 0, such as 5, "
                f"not {wait!r}."
            )
        object.__setattr__(self, "max_wait_ms", float(wait))


_METHODS = ("GET", "POST")


@dataclass(frozen=True, slots=True)
class Route:
    """One endpoint: ``POST <gateway>/<deployment><path>``; ``batch`` when it is batched.

    Attributes:
        name: the endpoint's name; the deployment handle's method name.
        path: where it is served, such as ``"/predict"``.
        streaming: it answers with server-sent events.
        batch: concurrent requests are coalesced into one call.
        methods: the HTTP methods it takes (``"GET"``, ``"POST"``).
        raw: its handler reads the request and writes the answer itself
            (status, content type, JSON or a stream, as the request asks),
            such as the OpenAI-compatible routes of :mod:`cobalt.llm`.

    Example:
        >>> Route("models", "/v1/models", methods=("GET", "POST"), raw=True).methods
        ('GET', 'POST')
    """

    name: str
    path: str
    streaming: bool = False
    batch: Batch | None = None
    methods: tuple[str, ...] = ("POST",)
    raw: bool = False

    def __post_init__(self) -> None:
        if not _ROUTE.match(self.path) or "//" in self.path or ".." in self.path:
            raise SpecError(
                f"endpoint path {self.path!r} is not valid: start with '/' and use letters, "
                "digits, '-', '_', '.' and '/' (for example '/predict')."
            )
        if self.batch is not None and not isinstance(self.batch, Batch):
            raise SpecError(
                f"endpoint {self.path!r}: batch= takes ct.Batch(max_size=..., max_wait_ms=...), "
                f"not {type(self.batch).__name__}."
            )
        methods = tuple(self.methods)
        if not methods or any(m not in _METHODS for m in methods):
            raise SpecError(
                f"endpoint {self.path!r}: methods={methods!r} must name one or more of "
                f"{', '.join(_METHODS)}."
            )
        object.__setattr__(self, "methods", methods)
        if self.raw and (self.streaming or self.batch is not None):
            raise SpecError(
                f"endpoint {self.path!r} is raw: its handler decides whether to stream, and "
                "it cannot be batched; drop streaming= and batch=."
            )

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Route:
        """The inverse of ``dataclasses.asdict(route)``; fields added later take defaults."""
        batch = data.get("batch")
        return cls(
            name=data["name"],
            path=data["path"],
            streaming=bool(data.get("streaming", False)),
            batch=Batch(**batch) if batch else None,
            methods=tuple(data.get("methods", ("POST",))),
            raw=bool(data.get("raw", False)),
        )


@dataclass(frozen=True, slots=True)
class Manifest:
    """Everything the controller needs to serve a deployment, as plain data."""

    name: str
    routes: tuple[Route, ...]
    autoscaling: Autoscaling = field(default_factory=Autoscaling)
    auth: bool = True
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    openapi: Mapping[str, Any] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        validate_deployment_name(self.name)
        paths = [r.path for r in self.routes]
        if not paths:
            raise SpecError(
                f"service {self.name!r} has no endpoints; add one with "
                f"@{self.name}.endpoint('/path')."
            )
        dupes = sorted({p for p in paths if paths.count(p) > 1})
        if dupes:
            raise SpecError(f"service {self.name!r} has two endpoints at {', '.join(dupes)}.")
        _count(self.max_body_bytes, "max_body_bytes", minimum=1, maximum=1 << 40)

    def route(self, path: str) -> Route | None:
        return next((r for r in self.routes if r.path == path), None)

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "routes": [asdict(r) for r in self.routes],
                "autoscaling": self.autoscaling.to_dict(),
                "auth": self.auth,
                "max_body_bytes": self.max_body_bytes,
                "openapi": dict(self.openapi),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        data = json.loads(text)
        return cls(
            name=data["name"],
            routes=tuple(Route.from_dict(r) for r in data["routes"]),
            autoscaling=Autoscaling.from_dict(data.get("autoscaling", {})),
            auth=bool(data.get("auth", True)),
            max_body_bytes=int(data.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
            openapi=data.get("openapi", {}),
        )
