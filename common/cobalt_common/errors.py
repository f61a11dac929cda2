"""The one exception tree of cobalt.

Every error cobalt raises derives from :class:`Error`, exported to users as
``ct.Error``::

    Error
    ├── SpecError                 an electron/lattice/executor option is invalid (at decoration)
    ├── GraphError                a workflow cannot be built (wrong arguments, bad iteration)
    ├── ConfigError               the configuration file is invalid (file and key named)
    ├── DispatchError             a dispatch was refused; nothing was registered
    │   ├── PicklingError         an argument or function cannot be pickled (path named)
    │   └── UnsatisfiableError    no configured executor can ever run a task's hardware spec
    ├── ControllerError           talking to the controller failed
    │   ├── ControllerUnavailableError   no controller is running at the address
    │   └── AuthenticationError   the controller (or an endpoint, below) refused the token
    ├── NotFoundError             an unknown dispatch id, node id, deployment or route
    ├── ContentAddressError       a sha256 is not 64 lowercase hex digits, or not its bytes' hash
    ├── ExecutorError             an executor's host, cluster or agent failed (the host named)
    ├── ProtocolError             a message from an agent or a worker is malformed
    ├── PayloadUnavailableError   a stored payload cannot be read or written where it lives
    ├── WaitTimeoutError          ``get_result(..., wait=seconds)`` ran out of time
    ├── TaskFailedError           a task failed remotely (carries the remote traceback)
    ├── DeploymentError           a deployment's replicas could not start (traceback attached)
    ├── EndpointError             an endpoint answered with an error (status, error id)
    │   ├── EndpointAuthenticationError  401: also an AuthenticationError
    │   └── EndpointNotFoundError        404: also a NotFoundError
    ├── FidelityError             ``ct.optimize`` fell below ``min_fidelity`` (report attached)
    └── HostError                 a machine reached over SSH cannot be used (host named)
        ├── HostUnreachableError      refused, timed out, or the name does not resolve
        ├── HostAuthenticationError   the host refused the key, or the key cannot be read
        ├── HostKeyError              the host's key is unknown or differs from known_hosts
        ├── RemotePythonError         the host has no interpreter at the configured path
        └── RemoteCobaltError         cobalt is missing on the host, or another version

Every error an endpoint answers is an ``EndpointError``, so one ``except
ct.EndpointError`` catches them all; a 401 or 404 is also the error of what
went wrong (``ct.AuthenticationError``, ``ct.NotFoundError``).

Raw ``grpc.RpcError``, SQLAlchemy and pickle errors never reach users; they
are translated at the boundary into one of these.

Each pickles by its arguments and attributes and unpickles without calling
its ``__init__`` again, so an error whose ``__init__`` takes keywords
(``EndpointError(message, status_code=...)``) crosses processes intact.
"""

from __future__ import annotations

from typing import Any


def _rebuilt(cls: type[Error], args: tuple[Any, ...], state: dict[str, Any]) -> Error:
    exc = cls.__new__(cls, *args)
    exc.args = args
    exc.__dict__.update(state)
    return exc


class Error(Exception):
    """Root of every error cobalt raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        return _rebuilt, (type(self), self.args, self.__dict__)


class SpecError(Error, ValueError):
    """An option of an electron, lattice or executor is invalid."""


class GraphError(Error):
    """A workflow cannot be built from the lattice function."""


class ConfigError(Error):
    """The configuration file is invalid; the message names the file and key."""


class DispatchError(Error):
    """The controller refused a dispatch; nothing was registered."""


class PicklingError(DispatchError):
    """A function or argument cannot be pickled; the message names its path."""


class UnsatisfiableError(DispatchError):
    """No configured executor can ever satisfy a task's hardware spec."""


class ControllerError(Error):
    """Talking to the controller failed."""


class ControllerUnavailableError(ControllerError):
    """No controller is reachable at the configured address."""


class AuthenticationError(ControllerError):
    """The controller refused the token."""


class NotFoundError(Error, LookupError):
    """An unknown dispatch id or node id."""


class ContentAddressError(Error, ValueError):
    """A payload's sha256 is not 64 lowercase hex digits, or its bytes hash to another.

    The controller refuses the whole request; nothing of it is stored.
    """


class ExecutorError(Error):
    """An executor's host, cluster or agent failed; the message names the host or command
    and what to do."""


class ProtocolError(Error, ValueError):
    """A message from an agent or a worker is malformed; it is refused whole."""


class PayloadUnavailableError(Error, OSError):
    """A stored payload cannot be read or written where it lives: an object
    store refused the request or could not be reached, or a URL expired."""


class WaitTimeoutError(Error, TimeoutError):
    """Waiting for a result ran past the given number of seconds."""


class TaskFailedError(Error):
    """A task failed remotely.

    Attributes:
        node_id: the failed task's node id.
        task_name: the failed task's function name.
        remote_traceback: the traceback text from the worker.
        reason: one of ``exception``, ``time_limit``, ``out_of_memory``,
            ``killed``, ``cancelled``.
        dispatch_id: the dispatch the task belongs to, when known.
        stdout: the last lines the task printed to stdout.
        stderr: the last lines the task printed to stderr.
        result: the dispatch's ``Result``, when raised for a whole dispatch;
            ``exc.result.rerun_locally(exc.node_id)`` runs the task here.
    """

    def __init__(
        self,
        message: str,
        *,
        node_id: int | None = None,
        task_name: str | None = None,
        remote_traceback: str = "",
        reason: str = "exception",
        dispatch_id: str = "",
        stdout: str = "",
        stderr: str = "",
        result: object = None,
    ) -> None:
        super().__init__(message)
        self.node_id = node_id
        self.task_name = task_name
        self.remote_traceback = remote_traceback
        self.reason = reason
        self.dispatch_id = dispatch_id
        self.stdout = stdout
        self.stderr = stderr
        self.result = result


class DeploymentError(Error):
    """A deployment could not start or was stopped; the message says why.

    Attributes:
        name: the deployment.
        remote_traceback: the failing replica's traceback, when one failed to start.
    """

    def __init__(self, message: str, *, name: str = "", remote_traceback: str = "") -> None:
        super().__init__(message)
        self.name = name
        self.remote_traceback = remote_traceback


class EndpointError(Error):
    """An endpoint answered with an error.

    Attributes:
        status_code: the HTTP status (422 bad input, 413 too large, 500 the
            endpoint raised, 503 no replica could take it in time, ...).
        error_id: for 500s, the id the replica logged the traceback under.
        field: for 422s, the request field that was wrong.
        retry_after: for 503s, the seconds the gateway asked to wait.
    """

    def __init__(
        self,
        message: str,
        *,
        status_code: int,
        error_id: str = "",
        field: str = "",
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.error_id = error_id
        self.field = field
        self.retry_after = retry_after


class EndpointAuthenticationError(AuthenticationError, EndpointError):
    """An endpoint refused the token (HTTP 401): caught as ``ct.EndpointError`` and as
    ``ct.AuthenticationError``."""

    def __init__(self, message: str, *, status_code: int = 401, **kwargs: Any) -> None:
        EndpointError.__init__(self, message, status_code=status_code, **kwargs)


class EndpointNotFoundError(NotFoundError, EndpointError):
    """An endpoint answered 404 (no such deployment or route): caught as
    ``ct.EndpointError`` and as ``ct.NotFoundError``."""

    def __init__(self, message: str, *, status_code: int = 404, **kwargs: Any) -> None:
        EndpointError.__init__(self, message, status_code=status_code, **kwargs)


class FidelityError(Error):
    """An optimized model's outputs drifted further from the original's than allowed.

    ``ct.optimize(..., min_fidelity=...)`` raises it rather than hand back a
    worse model; the message names the measured value, the threshold and what
    to try instead.

    Attributes:
        report: the ``ct.OptimizationReport`` of the rejected attempt (sizes,
            latencies, fidelity and what was applied).
    """

    def __init__(self, message: str, *, report: object = None) -> None:
        super().__init__(message)
        self.report = report


class HostError(Error):
    """A machine cobalt reaches over SSH cannot be used.

    The message names the host (``user@name:port``) and says what to do; the
    subclass says what went wrong, so an executor can send the task elsewhere
    or fail it with that reason.

    Attributes:
        host: the host as ``user@name:port``.
        reason: a short word for the failure (``unreachable``, ``auth_refused``,
            ``host_key``, ``python_missing``, ``cobalt_mismatch``; ``host`` here).
    """

    reason = "host"

    def __init__(self, message: str, *, host: str = "") -> None:
        super().__init__(message)
        self.host = host


class HostUnreachableError(HostError):
    """The host refused the connection, did not answer in time, or its name does not resolve."""

    reason = "unreachable"


class HostAuthenticationError(HostError):
    """The host refused every key offered, or the configured key file cannot be read."""

    reason = "auth_refused"


class HostKeyError(HostError):
    """The host's key is not in the known_hosts file, or differs from the one recorded there."""

    reason = "host_key"


class RemotePythonError(HostError):
    """The host has no Python interpreter at the configured path."""

    reason = "python_missing"


class RemoteCobaltError(HostError):
    """cobalt cannot be imported by the host's interpreter, or is another version than here."""

    reason = "cobalt_mismatch"
