"""``cobalt.__all__`` is exactly the public surface (httpx's test_exported_members)."""

from __future__ import annotations

import pytest

import cobalt as ct

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
    "HardwareSpec",
    # dispatching and results
    "dispatch",
    "dispatch_sync",
    "get_result",
    "cancel",
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


def test_llm_surface_is_exact_and_lazy() -> None:
    import subprocess
    import sys

    assert set(ct.llm.__all__) >= {"Engine", "Embedder", "SamplingParams", "random_model"}
    for name in ct.llm.__all__:
        assert getattr(ct.llm, name) is not None
    code = "import sys, cobalt as ct; ct.llm.SamplingParams; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "importing cobalt must not import torch"
