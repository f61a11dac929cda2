"""``ct.deploy``, ``ct.get_deployment`` and ``ct.list_deployments``.

``ct.deploy(service)(*init_args)`` sends the service to the controller as a
pickled :class:`~cobalt._runtime.replica.ReplicaEntry` plus a plain-data
:class:`~cobalt_common.deploy.Manifest`, and waits until the first replica
is ready. Inside a lattice being built, the same call records a task that
deploys when the workflow runs, and whose output is the
:class:`~cobalt._deployment.Deployment`. ``@ct.deploy(...)`` on a plain
function deploys it at once as a one-route service.
"""

from __future__ import annotations

import functools
import inspect
import os
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ParamSpec, TypeVar, Unpack, cast, overload

from cobalt._client import Client, get_client
from cobalt._deployment import Deployment
from cobalt._graph import NodeKind, current_builder
from cobalt._lattice import check_arguments, signature_of
from cobalt._options import TaskOptions
from cobalt._pickling import dumps, sha256_hex
from cobalt._sentinel import UNSET
from cobalt._service import (
    SERVICE_OPTIONS,
    Service,
    ServiceKwargs,
    build_service,
    check_options,
    default_name,
)
from cobalt._submit import executor_ref, split_payloads
from cobalt_common.deploy import deploy_task_key
from cobalt_common.errors import (
    ControllerUnavailableError,
    DeploymentError,
    SpecError,
    WaitTimeoutError,
)
from cobalt_common.hardware import HardwareSpec
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.wire import spec_to_pb

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_TIMEOUT_S = 600.0
_WAIT_CHUNK_S = 30.0
_DEPLOY_TASK = TaskOptions(HardwareSpec(cpus=0), retries=0, executor=None)
"""A deploy task only talks to the controller: it needs no CPU of its own."""


class DeployKwargs(ServiceKwargs, total=False):
    """What ``@ct.deploy(...)`` on a plain function accepts: service options, wait, timeout."""

    wait: bool
    timeout: float


def _check_wait(wait: Any, timeout: Any) -> tuple[bool, float]:
    if not isinstance(wait, bool):
        raise SpecError(f"ct.deploy: wait={wait!r} must be True or False.")
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise SpecError(f"ct.deploy: timeout={timeout!r} must be a number of seconds above 0.")
    return wait, float(timeout)


def build_create_request(
    service: Service[...], args: Sequence[Any], kwargs: Mapping[str, Any]
) -> tuple[pb.DeploymentCreateRequest, dict[str, bytes]]:
    """The DeploymentCreate request, plus payloads too large to send inline."""
    # uvicorn and pydantic, which serve the replica: imported only when a service is deployed.
    from cobalt._runtime.replica import ReplicaEntry

    name = service.name
    manifest = service.manifest()
    payloads: dict[str, bytes] = {}

    def add(value: Any, path: str, what: str) -> str:
        data = dumps(value, lambda: (path, what))
        sha = sha256_hex(data)
        payloads[sha] = data
        return sha

    req = pb.DeploymentCreateRequest(
        name=name,
        manifest_json=manifest.to_json(),
        service_sha256=add(ReplicaEntry(service), "service", f"service {name!r}"),
        working_dir=os.getcwd(),
    )
    for position, value in enumerate(args):
        what = f"argument args[{position}] of service {name!r}"
        req.args.add(position=position, sha256=add(value, f"args[{position}]", what))
    for keyword, value in kwargs.items():
        what = f"argument {keyword}= of service {name!r}"
        req.args.add(position=-1, keyword=keyword, sha256=add(value, f"kwargs[{keyword!r}]", what))
    req.hardware.CopyFrom(spec_to_pb(service.hardware()))
    executor = service.options.executor
    ref = executor_ref(None if executor is UNSET else executor)
    if ref is not None:
        req.executor.CopyFrom(ref)
    return req, split_payloads(req.payloads, payloads)


def _interrupted(name: str) -> str:
    return (
        f"stopped waiting; deployment {name!r} goes on starting. "
        f"ct.get_deployment({name!r}) gives its handle, and .teardown() stops it."
    )


def _send(
    client: Client, req: pb.DeploymentCreateRequest, large: dict[str, bytes]
) -> pb.Deployment:
    client.upload(large)
    if not req.wait_s:
        return cast(pb.Deployment, client.call(client.stub.DeploymentCreate, req))
    try:
        return cast(pb.Deployment, client.call_interruptibly(client.stub.DeploymentCreate, req))
    except KeyboardInterrupt:
        raise KeyboardInterrupt(_interrupted(req.name)) from None


def wait_until_started(client: Client, msg: pb.Deployment, timeout: float) -> pb.Deployment:
    """Block until the deployment leaves STARTING; raise if it failed or ran out of time."""
    deadline = time.monotonic() + timeout
    starting = (pb.DEPLOYMENT_STATUS_STARTING, pb.DEPLOYMENT_STATUS_UNSPECIFIED)
    while msg.status in starting:
        left = deadline - time.monotonic()
        if left <= 0:
            raise WaitTimeoutError(
                f"deployment {msg.name!r} is still starting after {timeout:g}s; it goes on "
                f"starting. `cobalt deployments events {msg.name}` shows what it is doing; "
                f"ct.get_deployment({msg.name!r}) gives its handle, and .teardown() stops it."
            )
        req = pb.DeploymentGetRequest(name=msg.name, wait_s=min(_WAIT_CHUNK_S, left))
        try:
            msg = client.call_interruptibly(client.stub.DeploymentGet, req)
        except KeyboardInterrupt:
            raise KeyboardInterrupt(_interrupted(msg.name)) from None
    if msg.status == pb.DEPLOYMENT_STATUS_FAILED:
        raise DeploymentError(
            f"deployment {msg.name!r} failed to start: {_first_line(msg.error)}\n"
            f"The replica's traceback (also in exc.remote_traceback):\n{msg.error}",
            name=msg.name,
            remote_traceback=msg.error,
        )
    if msg.status == pb.DEPLOYMENT_STATUS_STOPPED:
        raise DeploymentError(
            f"deployment {msg.name!r} was torn down before it started.", name=msg.name
        )
    return msg


def _first_line(text: str) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else "its replicas could not start."


def deploy_now(
    service: Service[...],
    args: Sequence[Any],
    kwargs: Mapping[str, Any],
    *,
    wait: bool = True,
    timeout: float = DEFAULT_TIMEOUT_S,
    params: Sequence[str] | None = None,
) -> Deployment:
    """Send the service to the controller; with ``wait``, return once it is active."""
    signature = signature_of(service.initializer)
    check_arguments("service", service.name, signature, args, kwargs)
    req, large = build_create_request(service, args, kwargs)
    if wait:
        req.wait_s = min(_WAIT_CHUNK_S, timeout)
    started = time.monotonic()
    client = get_client(start=True)
    try:
        msg = _send(client, req, large)
    except ControllerUnavailableError:
        # The controller went away since we last saw it: start a new one, once.
        client = get_client(start=True)
        msg = _send(client, req, large)
    if wait:
        msg = wait_until_started(client, msg, max(0.0, timeout - (time.monotonic() - started)))
    return Deployment.from_pb(msg, params, client)


class DeployTask:
    """The function of a lattice's ``deploy <name>`` task: deploys on the worker.

    The worker reaches the controller through ``COBALT_CONTROLLER_ADDRESS``
    and ``COBALT_CONTROLLER_TOKEN``, as sublattices do. The task's node is
    marked by its :attr:`function_key`: the controller lets its credential
    create and read this service's deployment, and no other.
    """

    __slots__ = ("service", "timeout", "wait")

    def __init__(self, service: Service[...], wait: bool, timeout: float) -> None:
        self.service = service
        self.wait = wait
        self.timeout = timeout

    @property
    def function_key(self) -> str:
        return deploy_task_key(self.service.name)

    def __call__(self, *args: Any, **kwargs: Any) -> Deployment:
        return deploy_now(self.service, args, kwargs, wait=self.wait, timeout=self.timeout)

    def __repr__(self) -> str:
        return f"DeployTask({self.service.name!r})"


def _deployer(service: Service[P], wait: bool, timeout: float) -> Callable[P, Deployment]:
    @functools.wraps(service.initializer)
    def deploy_with(*args: P.args, **kwargs: P.kwargs) -> Deployment:
        builder = current_builder()
        if builder is None:
            return deploy_now(service, args, kwargs, wait=wait, timeout=timeout)
        signature = signature_of(service.initializer)
        check_arguments("service", service.name, signature, args, kwargs)
        service.manifest()  # a service without endpoints fails now, not in the worker
        task = DeployTask(service, wait, timeout)
        name = f"deploy {service.name}"
        ref = builder.record(NodeKind.ELECTRON, name, task, args, kwargs, _DEPLOY_TASK)
        return cast(Deployment, ref)

    return deploy_with


def deploy_function(function: Callable[..., Any], options: Mapping[str, Any]) -> Deployment:
    """Deploy a plain function as a service with one route, ``/<function name>``."""
    owner = f"@ct.deploy on {getattr(function, '__name__', function)!r}"
    given = {k: v for k, v in options.items() if k not in ("wait", "timeout")}
    wait, timeout = _check_wait(
        options.get("wait", True), options.get("timeout", DEFAULT_TIMEOUT_S)
    )
    given.setdefault("name", default_name(function))
    service = build_service(_no_state, given, owner)
    streaming = inspect.isgeneratorfunction(function) or inspect.isasyncgenfunction(function)
    service.add_endpoint(function, f"/{function.__name__}", streaming=streaming)
    signature = inspect.signature(function)
    params = [p.name for p in signature.parameters.values() if p.kind != p.VAR_KEYWORD]
    return deploy_now(service, (), {}, wait=wait, timeout=timeout, params=params)


def _no_state() -> dict[str, Any]:
    """The initializer of a function deployed with ``@ct.deploy``: nothing to load."""
    return {}


@overload
def deploy(
    target: Service[P], /, *, wait: bool = True, timeout: float = DEFAULT_TIMEOUT_S
) -> Callable[P, Deployment]: ...


@overload
def deploy(target: Callable[..., Any], /, **options: Unpack[DeployKwargs]) -> Deployment: ...


@overload
def deploy(
    target: None = None, /, **options: Unpack[DeployKwargs]
) -> Callable[[Callable[..., Any]], Deployment]: ...


def deploy(target: object = None, /, **options: Any) -> Any:
    """Deploy a service, or (as a decorator) a plain function, behind the gateway.

    ``ct.deploy(service)`` returns a function taking the initializer's
    arguments; calling it registers the deployment and, with ``wait=True``,
    returns once a replica is ready. Inside a lattice, the call becomes a
    task (``deploy <name>``) that deploys when the workflow runs.

    ``@ct.deploy(gpu=..., min_replicas=..., ...)`` (or bare ``@ct.deploy``) on
    a plain function deploys it at once as a service with one route,
    ``/<function name>``, and returns the :class:`Deployment`;
    ``dep(...)`` calls it.

    Args:
        target: a ``@ct.service``, or the function to deploy.
        wait: wait until a replica is ready (default True); False returns at once.
        timeout: how long to wait, in seconds (default 600).
        **options: for a function, the options of ``@ct.service``.

    Raises:
        DeploymentError: the replicas could not start (the traceback is attached).
        WaitTimeoutError: no replica was ready within ``timeout``.
        SpecError: an option is invalid, or the service has no endpoints.

    Example:
        >>> import cobalt as ct
        >>> @ct.deploy(cpus=1, min_replicas=0)  # doctest: +SKIP
        ... def double(x: int) -> int:
        ...     return 2 * x
        >>> double(21)  # doctest: +SKIP
        42
    """
    if isinstance(target, Service):
        unknown = sorted(set(options) - {"wait", "timeout"})
        if unknown:
            raise SpecError(
                f"ct.deploy(service) takes only wait= and timeout=, not {unknown[0]}=; set the "
                f"service's options on @ct.service(...) instead."
            )
        wait, timeout = _check_wait(
            options.get("wait", True), options.get("timeout", DEFAULT_TIMEOUT_S)
        )
        return _deployer(target, wait, timeout)
    accepted = (*SERVICE_OPTIONS, "wait", "timeout")
    check_options("@ct.deploy(...)", options, accepted)
    _check_wait(options.get("wait", True), options.get("timeout", DEFAULT_TIMEOUT_S))
    if target is None:

        def decorate(function: Callable[..., Any]) -> Deployment:
            if not callable(function):
                raise SpecError(f"@ct.deploy(...) decorates a function, not {function!r}.")
            return deploy_function(function, options)

        return decorate
    if callable(target):
        return deploy_function(target, options)
    raise SpecError(
        f"ct.deploy takes a @ct.service or a function, got {target!r}. Deploy a service with "
        "ct.deploy(my_service)(*init_args), or decorate a function with @ct.deploy(...)."
    )


def get_deployment(name: str) -> Deployment:
    """The handle of the deployment called ``name``.

    Raises:
        NotFoundError: no deployment has that name.
    """
    client = get_client()
    msg = client.call(client.stub.DeploymentGet, pb.DeploymentGetRequest(name=name), timeout=60)
    return Deployment.from_pb(msg, controller=client)


def list_deployments(include_stopped: bool = False) -> list[Deployment]:
    """Every deployment the controller runs (also torn-down ones with ``include_stopped``)."""
    client = get_client()
    req = pb.DeploymentListRequest(include_stopped=include_stopped)
    resp = client.call(client.stub.DeploymentList, req, timeout=60)
    return [Deployment.from_pb(msg, controller=client) for msg in resp.deployments]
