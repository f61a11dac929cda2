"""``@ct.service``: an initializer that runs once per replica, and the endpoints it serves.

Options are validated when the decorator runs, like an electron's: the
hardware each replica gets (``gpu``, ``gpus``, ``cpus``, ``memory``,
``executor``), how it scales (:class:`~cobalt_common.deploy.Autoscaling`, or
its most common settings as shorthand keywords) and whether callers need a
token. Endpoints stay plain functions here, so they can be unit-tested
without deploying anything; in a replica, the values the initializer returned
are passed to them by parameter name.

Example:
    >>> from cobalt._service import service
    >>> @service(cpus=2, max_replicas=3, name="echo")
    ... def load(prefix: str) -> dict[str, str]:
    ...     return {"prefix": prefix}
    >>> @load.endpoint("/say")
    ... def say(prefix: str, text: str) -> str:
    ...     return prefix + text
    >>> say(">", "hi")  # a plain function here
    '>hi'
    >>> load.manifest().routes
    (Route(name='say', path='/say', streaming=False, batch=None, methods=('POST',), raw=False),)
    >>> load.manifest().autoscaling.max_replicas
    3
    >>> load.hardware().describe()
    '2 CPUs'
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, ParamSpec, TypedDict, TypeVar, Unpack, overload

from cobalt._executors import ExecutorLike
from cobalt._hints import hints_of, list_element
from cobalt._options import Options, misuse_message, parse_options
from cobalt_common.deploy import (
    DEFAULT_MAX_BODY_BYTES,
    Autoscaling,
    Batch,
    DurationLike,
    Manifest,
    Route,
    validate_deployment_name,
)
from cobalt_common.errors import SpecError
from cobalt_common.hardware import HardwareSpec, MemoryLike

P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

HARDWARE_OPTIONS = ("gpu", "gpus", "cpus", "memory", "executor")
SHORTHANDS = ("min_replicas", "max_replicas", "target_concurrency", "scaledown_window")
SERVICE_OPTIONS = ("name", "auth", "autoscaling", "max_body_bytes", *SHORTHANDS, *HARDWARE_OPTIONS)
"""Every keyword ``@ct.service(...)`` accepts."""

_REFUSED = {
    "time_limit": "a service runs until it is torn down (dep.teardown()), so it has no time "
    "limit; to stop idle replicas use min_replicas=0 and scaledown_window=...",
    "retries": "a service's replicas are restarted whenever they die, so retries does not "
    "apply; a failing initializer marks the deployment failed with its traceback",
    "deps_pip": "install packages before deploying, or inside the initializer",
    "deps_bash": "run setup commands inside the initializer",
    "call_before": "call it at the start of the initializer instead",
    "call_after": "a service has no end to run it at; call it in the initializer instead",
}


class ServiceKwargs(TypedDict, total=False):
    """The options ``@ct.service`` accepts; any may be left out."""

    name: str
    auth: bool
    autoscaling: Autoscaling
    max_body_bytes: int
    min_replicas: int
    max_replicas: int
    target_concurrency: float
    scaledown_window: DurationLike
    gpu: str | None
    gpus: int
    cpus: float
    memory: MemoryLike
    executor: ExecutorLike | None


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of a service: the function and where it is served.

    For a raw route (``route.raw``), ``function`` is the factory that makes its
    handler in each replica (:data:`cobalt._runtime.raw.RawFactory`) and ``openapi``
    describes it: the OpenAPI operation for each method, by lower-case method.
    """

    function: Callable[..., Any]
    route: Route
    openapi: Mapping[str, Any] | None = None


def default_name(function: Callable[..., Any]) -> str:
    """A deployment name from a function name: ``load_model`` -> ``load-model``."""
    raw = getattr(function, "__name__", "service")
    return str(raw).replace("_", "-").lower().strip("-") or "service"


def check_options(owner: str, given: Mapping[str, Any], accepted: tuple[str, ...]) -> None:
    """Refuse options a service does not take, saying why or what is accepted."""
    for option in given:
        if option in accepted:
            continue
        if option in _REFUSED:
            raise SpecError(f"{owner} does not take {option}=: {_REFUSED[option]}.")
        close = difflib.get_close_matches(option, accepted, n=1)
        hint = f" Did you mean {close[0]}=?" if close else ""
        raise SpecError(
            f"{owner} got unknown option {option!r}.{hint} Accepted options: {', '.join(accepted)}."
        )


def merge_autoscaling(owner: str, autoscaling: Any, shorthand: Mapping[str, Any]) -> Autoscaling:
    """``autoscaling=`` with the shorthand keywords laid over it."""
    if autoscaling is None:
        return Autoscaling(**shorthand)
    if not isinstance(autoscaling, Autoscaling):
        raise SpecError(
            f"{owner}: autoscaling= takes ct.Autoscaling(min_replicas=..., max_replicas=..., "
            f"...), not {type(autoscaling).__name__}."
        )
    if not shorthand:
        return autoscaling
    changes = dict(shorthand)
    derived = max(1, math.ceil(2 * autoscaling.target_concurrency))
    if "target_concurrency" in changes and autoscaling.max_concurrency == derived:
        changes["max_concurrency"] = 0  # derive it again from the new target
    return dataclasses.replace(autoscaling, **changes)


def _check_max_body(owner: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise SpecError(
            f"{owner}: max_body_bytes={value!r} must be a whole number of bytes, such as "
            f"{DEFAULT_MAX_BODY_BYTES} (16 MB, the default)."
        )
    return value


class Service(Generic[P]):
    """An initializer that runs once per replica, and the endpoints it serves.

    Attributes:
        initializer: the decorated function; it returns a dict whose values
            are passed to endpoints by parameter name.
        name: the deployment name (a URL path segment).
        auth: whether callers need the deployment's token.
        autoscaling: how many replicas run, and when that changes.
        max_body_bytes: the largest request body the gateway accepts.
        options: the hardware options, parsed.
        endpoints: the endpoints, in the order they were declared.
    """

    __name__: str
    __qualname__: str
    __wrapped__: Callable[P, Mapping[str, Any]]

    def __init__(
        self,
        initializer: Callable[P, Mapping[str, Any]],
        *,
        name: str,
        auth: bool = True,
        autoscaling: Autoscaling | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        options: Options | None = None,
    ) -> None:
        functools.update_wrapper(self, initializer, updated=())
        owner = f"service {name!r}"
        self.initializer = initializer
        self.name = validate_deployment_name(name)
        if not isinstance(auth, bool):
            raise SpecError(f"{owner}: auth={auth!r} must be True or False.")
        self.auth = auth
        self.autoscaling = autoscaling or Autoscaling()
        self.max_body_bytes = _check_max_body(owner, max_body_bytes)
        self.options = options or Options()
        self.endpoints: list[Endpoint] = []
        self.hardware()

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Mapping[str, Any]:
        """Run the initializer here, as a plain function (for tests)."""
        return self.initializer(*args, **kwargs)

    def endpoint(
        self, path: str, *, streaming: bool = False, batch: Batch | None = None
    ) -> Callable[[F], F]:
        """Serve the decorated function at ``POST <deployment url><path>``.

        Its parameters named like keys of the initializer's dict receive those
        values; the others are read from the JSON request body, checked
        against their type hints. The function is returned unchanged.

        Args:
            path: where it is served, such as ``"/predict"``.
            streaming: answer with server-sent events, one per value the
                (sync or async) generator yields.
            batch: coalesce concurrent requests into one call
                (``ct.Batch(max_size=32, max_wait_ms=5)``). Each request still
                sends one item; the function takes each body field as a
                ``list[...]``, one element per request, and returns a list of
                the same length, whose element ``i`` answers request ``i`` (an
                ``Exception`` there fails that request alone).

        Raises:
            SpecError: the path is missing or invalid, or taken already, or
                ``batch`` does not fit the function.

        Example:
            >>> svc = service(lambda: {"scale": 2}, name="scaler")
            >>> @svc.endpoint("/scale", batch=Batch(max_size=16, max_wait_ms=2))
            ... def scale(scale: int, x: list[float]) -> list[float]:
            ...     return [scale * v for v in x]
            >>> scale(2, [1.0, 2.5])
            [2.0, 5.0]
        """
        if not isinstance(path, str):
            what = getattr(path, "__name__", repr(path))
            raise SpecError(
                f"@{self.__name__}.endpoint needs the path to serve {what} at. "
                f'Did you mean @{self.__name__}.endpoint("/{what}")?'
            )
        if not isinstance(streaming, bool):
            raise SpecError(f"endpoint {path!r}: streaming={streaming!r} must be True or False.")
        if batch is True:  # type: ignore[comparison-overlap]  # untyped callers
            raise SpecError(
                f"endpoint {path!r}: batch= takes ct.Batch(...). "
                f'Did you mean @{self.__name__}.endpoint("{path}", batch=ct.Batch())?'
            )
        Route("endpoint", path, batch=batch)  # a bad path or batch fails here

        def decorate(function: F) -> F:
            self.add_endpoint(function, path, streaming=streaming, batch=batch)
            return function

        return decorate

    def add_endpoint(
        self,
        function: Callable[..., Any],
        path: str,
        *,
        streaming: bool,
        batch: Batch | None = None,
    ) -> None:
        """Register ``function`` at ``path`` (what :meth:`endpoint` does)."""
        if not callable(function):
            raise SpecError(f"@{self.name}.endpoint({path!r}) decorates a function.")
        name = getattr(function, "__name__", "")
        if not name.isidentifier():
            raise SpecError(f"endpoint {path!r} must be a named function (def ...), not {name!r}.")
        route = Route(name, path, streaming, batch)
        check_endpoint_signature(function, route)
        self._register(Endpoint(function, route))

    def add_raw_route(
        self,
        name: str,
        path: str,
        factory: Callable[[Mapping[str, Any]], Any],
        *,
        methods: tuple[str, ...] = ("POST",),
        openapi: Mapping[str, Any] | None = None,
    ) -> None:
        """Serve a raw route at ``path``: its handler reads the request and writes the answer.

        Args:
            name: the route's name (the deployment handle's method name).
            path: where it is served, such as ``"/v1/models"``.
            factory: called once per replica with the initializer's dict;
                returns the handler (see :mod:`cobalt._runtime.raw`).
            methods: the HTTP methods it takes.
            openapi: its OpenAPI operation for each method, by lower-case
                method name (``{"get": {...}}``); left out of the document if None.

        Raises:
            SpecError: the name, path or methods are invalid, or taken already.

        Example:
            >>> from cobalt._runtime.raw import RawResponse
            >>> svc = service(lambda: {"version": "1.2"}, name="versioned")
            >>> def version(values):
            ...     async def answer(request):
            ...         return RawResponse.json({"version": values["version"]})
            ...     return answer
            >>> svc.add_raw_route("version", "/version", version, methods=("GET",))
            >>> svc.manifest().routes[0].methods
            ('GET',)
        """
        if not isinstance(name, str) or not name.isidentifier():
            raise SpecError(f"route {path!r}: its name must be an identifier, not {name!r}.")
        if not callable(factory):
            raise SpecError(f"route {path!r}: the factory must be a function values -> handler.")
        route = Route(name, path, methods=methods, raw=True)
        self._register(Endpoint(factory, route, openapi))

    def _register(self, endpoint: Endpoint) -> None:
        name, path = endpoint.route.name, endpoint.route.path
        for other in self.endpoints:
            if other.route.path == path:
                raise SpecError(
                    f"service {self.name!r} already serves {other.route.name} at {path!r}; "
                    "give this endpoint another path."
                )
            if other.route.name == name:
                raise SpecError(
                    f"service {self.name!r} already has an endpoint named {name!r} (at "
                    f"{other.route.path}); endpoint names become client methods, so rename one."
                )
        self.endpoints.append(endpoint)

    def manifest(self) -> Manifest:
        """Everything the controller needs to serve this service, as plain data."""
        return Manifest(
            name=self.name,
            routes=tuple(e.route for e in self.endpoints),
            autoscaling=self.autoscaling,
            auth=self.auth,
            max_body_bytes=self.max_body_bytes,
        )

    def hardware(self) -> HardwareSpec:
        """What each replica gets."""
        return self.options.hardware(owner=f"service {self.name!r}")

    def __repr__(self) -> str:
        paths = ", ".join(e.route.path for e in self.endpoints) or "no endpoints yet"
        auth = "" if self.auth else ", open (no auth)"
        return f"<service {self.name}: {self.hardware().describe()}, {paths}{auth}>"


def check_endpoint_signature(function: Callable[..., Any], route: Route) -> None:
    """Refuse signatures a JSON body cannot call, and generators not marked streaming."""
    owner = f"endpoint {route.name} ({route.path})"
    try:
        signature = inspect.signature(function)
    except (TypeError, ValueError):
        raise SpecError(f"{owner}: Python cannot read its signature; use a def.") from None
    for param in signature.parameters.values():
        if param.kind is inspect.Parameter.POSITIONAL_ONLY:
            raise SpecError(
                f"{owner}: parameter {param.name!r} is positional-only, but request bodies name "
                "every argument; remove the '/' from its signature."
            )
        if param.kind is inspect.Parameter.VAR_POSITIONAL:
            raise SpecError(
                f"{owner}: *{param.name} cannot be filled from a JSON object; take a list "
                f"parameter instead ({param.name}: list[...])."
            )
    generator = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
    if route.batch is not None:
        check_batched_signature(owner, function, signature, route, generator=generator)
    if generator and not route.streaming:
        raise SpecError(
            f"{owner} is a generator; serve it as a stream with "
            f'@service.endpoint("{route.path}", streaming=True), or return a value.'
        )


def check_batched_signature(
    owner: str,
    function: Callable[..., Any],
    signature: inspect.Signature,
    route: Route,
    *,
    generator: bool,
) -> None:
    """What can be known of a batched endpoint before the initializer has run.

    Which parameters the initializer fills is known only in a replica, so
    that each body parameter is a ``list[...]`` is checked there, when the
    request model is built (:meth:`cobalt._runtime.validation.RequestBody.of`).
    """
    if route.streaming or generator:
        raise SpecError(
            f"{owner}: a streaming endpoint cannot be batched, since a batch call returns "
            "one list of results; drop batch= or streaming=True."
        )
    params = signature.parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        raise SpecError(
            f"{owner} is batched, so each request field must be a named list parameter; "
            "replace **kwargs with parameters such as text: list[str]."
        )
    hints = hints_of(function)
    if not any(list_element(hints.get(p.name, Any)) is not None for p in params):
        raise SpecError(
            f"{owner} is batched, so it takes the request fields as lists, one element per "
            "request, such as text: list[str]; none of its parameters is a list."
        )


def _misuse(value: object) -> str:
    message = misuse_message("service", value)
    head, found, _ = message.partition("Accepted options:")
    return f"{head}Accepted options: {', '.join(SERVICE_OPTIONS)}." if found else message


def build_service(
    function: Callable[P, Mapping[str, Any]], given: Mapping[str, Any], owner: str
) -> Service[P]:
    """Validate ``@ct.service`` keywords and make the service."""
    check_options(owner, given, SERVICE_OPTIONS)
    hardware = {k: v for k, v in given.items() if k in HARDWARE_OPTIONS}
    shorthand = {k: v for k, v in given.items() if k in SHORTHANDS}
    name = given.get("name")
    if name is None:
        name = default_name(function)
    return Service(
        function,
        name=name,
        auth=given.get("auth", True),
        autoscaling=merge_autoscaling(owner, given.get("autoscaling"), shorthand),
        max_body_bytes=given.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES),
        options=parse_options(owner, hardware),
    )


@overload
def service(
    function: Callable[P, Mapping[str, Any]], /, **options: Unpack[ServiceKwargs]
) -> Service[P]: ...


@overload
def service(
    function: None = None, /, **options: Unpack[ServiceKwargs]
) -> Callable[[Callable[P, Mapping[str, Any]]], Service[P]]: ...


def service(function: object = None, /, **options: Any) -> Any:
    """Make a function a service's initializer: bare (``@ct.service``) or with options.

    Args:
        function: the initializer (given when used bare). It runs once per
            replica with the arguments given to ``ct.deploy(service)(...)``
            and returns a dict; endpoints receive its values by name.
        **options: see :class:`ServiceKwargs`. ``name`` (default: the
            function's name with ``_`` as ``-``), ``auth`` (default True:
            callers need the deployment's token), ``autoscaling``
            (``ct.Autoscaling(...)``), the shorthands ``min_replicas``,
            ``max_replicas``, ``target_concurrency`` and ``scaledown_window``
            laid over it, ``max_body_bytes`` (default 16 MB), and each
            replica's hardware: ``gpu``, ``gpus``, ``cpus``, ``memory``,
            ``executor``.

    Raises:
        SpecError: an option is unknown or invalid, or the positional
            argument is not a function.

    Example:
        >>> @service(gpu="l4", memory="16GB", min_replicas=1)
        ... def classifier(model_name: str) -> dict[str, str]:
        ...     return {"model": model_name}
        >>> classifier
        <service classifier: 1x L4, 1 CPU, 16 GB, no endpoints yet>
    """
    if function is not None and not callable(function):
        raise SpecError(_misuse(function))
    name = getattr(function, "__name__", None)
    owner = f"service '{name}'" if name else "@ct.service(...)"
    check_options(owner, options, SERVICE_OPTIONS)
    if function is not None:
        return build_service(function, options, owner)

    def decorate(function: Callable[P, Mapping[str, Any]]) -> Service[P]:
        if not callable(function):
            raise SpecError(_misuse(function))
        return build_service(function, options, f"service '{function.__name__}'")

    return decorate
