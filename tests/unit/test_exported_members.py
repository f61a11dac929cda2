"""``cobalt.__all__`` is exactly the public surface (httpx's test_exported_members)."""

from __future__ import annotations

import importlib.metadata
import inspect
import pickle
import re
import subprocess
import sys
import tomllib
import traceback
from collections.abc import Callable
from pathlib import Path

import cloudpickle
import httpx
import pytest

import cobalt as ct
from cobalt._http import error_for

pytestmark = pytest.mark.unit

PUBLIC_SURFACE = {
    # decorators and workflow helpers
    "electron",
    "lattice",
    "wait",
    "Electron",
    "Lattice",
    "UNSET",
    # dependencies
    "DepsBash",
    "DepsCall",
    "DepsPip",
    # executors
    "Executor",
    "LocalExecutor",
    "executor",
    "HardwareSpec",
    # dispatching and results
    "dispatch",
    "dispatch_sync",
    "get_result",
    "cancel",
    "sync",
    "status",
    "redispatch",
    "last_failure",
    "Result",
    "Status",
    "TaskRecord",
    "HardwareGiven",
    # cost
    "estimate",
    "Estimate",
    "TaskEstimate",
    # deployments
    "service",
    "Service",
    "deploy",
    "Deployment",
    "DeploymentMetrics",
    "get_deployment",
    "list_deployments",
    "Autoscaling",
    "Batch",
    "Schedule",
    # model optimization and the model stack
    "optimize",
    "llm",
    "OptimizationReport",
    # the exception tree
    "Error",
    "SpecError",
    "GraphError",
    "ConfigError",
    "DispatchError",
    "PicklingError",
    "UnsatisfiableError",
    "ControllerError",
    "ControllerUnavailableError",
    "AuthenticationError",
    "NotFoundError",
    "WaitTimeoutError",
    "TaskFailedError",
    "DeploymentError",
    "EndpointError",
    "FidelityError",
    "__version__",
}


def test_all_is_exactly_the_public_surface() -> None:
    exported = set(ct.__all__)
    assert exported == PUBLIC_SURFACE, (
        f"added: {sorted(exported - PUBLIC_SURFACE)}, missing: {sorted(PUBLIC_SURFACE - exported)}"
    )


def test_all_lists_each_name_once() -> None:
    assert len(ct.__all__) == len(set(ct.__all__))


@pytest.mark.parametrize("name", sorted(PUBLIC_SURFACE))
def test_every_exported_name_exists(name: str) -> None:
    assert hasattr(ct, name), f"cobalt.__all__ lists {name!r} but cobalt has no such attribute"


def test_every_public_class_and_function_is_exported() -> None:
    public = {
        name
        for name, value in vars(ct).items()
        if not name.startswith("_") and not isinstance(value, type(ct))
    }
    assert public <= set(ct.__all__), (
        f"public but not in __all__: {sorted(public - set(ct.__all__))}"
    )


def test_exceptions_derive_from_one_root() -> None:
    errors = [getattr(ct, name) for name in ct.__all__ if name.endswith("Error")]
    assert all(issubclass(cls, ct.Error) for cls in errors)
    assert issubclass(ct.PicklingError, ct.DispatchError)
    assert issubclass(ct.UnsatisfiableError, ct.DispatchError)
    assert issubclass(ct.AuthenticationError, ct.ControllerError)
    assert issubclass(ct.ControllerUnavailableError, ct.ControllerError)


def test_status_names_match_covalents() -> None:
    """``ct.status`` and ``Result``'s constants carry Covalent's names."""
    assert ct.status.COMPLETED == "COMPLETED" == ct.Result.COMPLETED
    assert ct.status.NEW_OBJECT is ct.Status.NEW is ct.Result.NEW_OBJ
    for name in ("RUNNING", "FAILED", "CANCELLED", "POSTPROCESSING", "PENDING_POSTPROCESSING"):
        assert getattr(ct.Result, name) == getattr(ct.status, name) == name
    assert ct.status.POSTPROCESSING_FAILED == ct.Result.POSTPROCESSING_FAILED
    assert set(ct.status.__all__) >= {s.name for s in ct.Status}


def test_llm_surface_is_exact_and_lazy() -> None:
    assert set(ct.llm.__all__) >= {"Engine", "Embedder", "SamplingParams", "random_model"}
    for name in ct.llm.__all__:
        assert getattr(ct.llm, name) is not None
    code = "import sys, cobalt as ct; ct.llm.SamplingParams; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing cobalt must not import torch"


def _classes_and_functions() -> list[str]:
    return sorted(
        name
        for name in ct.__all__
        if isinstance(getattr(ct, name), type) or inspect.isfunction(getattr(ct, name))
    )


@pytest.mark.parametrize("name", _classes_and_functions())
def test_every_exported_class_and_function_is_named_as_cobalt(name: str) -> None:
    value = getattr(ct, name)
    assert value.__module__ == "cobalt", f"ct.{name} is named {value.__module__}.{name}"
    assert getattr(sys.modules[value.__module__], value.__qualname__) is value


def test_an_exception_prints_as_cobalt() -> None:
    assert repr(ct.TaskFailedError) == "<class 'cobalt.TaskFailedError'>"
    line = traceback.format_exception_only(ct.SpecError("gpu='tpu' is not a GPU type"))[-1]
    assert line == "cobalt.SpecError: gpu='tpu' is not a GPU type\n"


def test_an_endpoint_error_is_caught_as_one_whatever_its_status() -> None:
    for status in (401, 404, 422, 500, 503):
        error = error_for(status, b'{"error": "no"}', httpx.Headers(), "classify")
        assert isinstance(error, ct.EndpointError) and error.status_code == status
    assert isinstance(error_for(401, b"", httpx.Headers(), "x"), ct.AuthenticationError)
    assert isinstance(error_for(404, b"", httpx.Headers(), "x"), ct.NotFoundError)


ERRORS = [
    ct.TaskFailedError(
        "task 'train' failed",
        node_id=3,
        task_name="train",
        remote_traceback="Traceback ...",
        reason="time_limit",
        dispatch_id="d1",
        stdout="out",
        stderr="err",
    ),
    ct.EndpointError("classify: busy", status_code=503, error_id="e1", retry_after=2.5),
    error_for(401, b'{"error": "wrong token"}', httpx.Headers(), "classify"),
    ct.DeploymentError("replicas failed", name="svc", remote_traceback="Traceback ..."),
    ct.FidelityError("fidelity 0.5 < 0.9", report={"fidelity": 0.5}),
    ct.SpecError("gpu='tpu' is not a GPU type"),
    ct.PicklingError("args[0] cannot be pickled"),
]
_UNPICKLE = """
import pickle, sys
exc = pickle.loads(sys.stdin.buffer.read())
print(type(exc).__module__, type(exc).__qualname__, repr(exc.args), sorted(vars(exc).items()))
"""


@pytest.mark.parametrize("dumps", [pickle.dumps, cloudpickle.dumps], ids=["pickle", "cloudpickle"])
def test_errors_unpickle_in_another_process_with_their_attributes(
    dumps: Callable[[object], bytes],
) -> None:
    """As when a task returns an error, pickled in a worker and unpickled in the notebook."""
    for exc in ERRORS:
        proc = subprocess.run(
            [sys.executable, "-c", _UNPICKLE], input=dumps(exc), capture_output=True, check=True
        )
        cls = type(exc)
        expected = f"{cls.__module__} {cls.__qualname__} {exc.args!r} {sorted(vars(exc).items())}"
        assert proc.stdout.decode().strip() == expected


def test_the_version_is_written_once() -> None:
    assert ct.__version__ == importlib.metadata.version("cobalt")
    root = Path(ct.__file__).parents[2]
    literal = re.compile(r"""^\s*(__version__|VERSION)\s*=\s*["']\d""", re.MULTILINE)
    written = [
        str(path.relative_to(root))
        for folder in ("sdk", "controller", "executors", "common")
        for path in (root / folder).rglob("*.py")
        if literal.search(path.read_text())
    ]
    assert written == ["common/cobalt_common/version.py"]
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert "version" not in project and "version" in project["dynamic"]
