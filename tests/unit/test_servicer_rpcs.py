"""The controller's gRPC servicer answers every RPC of the ``Controller`` service:
the deployment RPCs it hands to a held object reach that object through the
registration that grpc's generated code performs."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from cobalt_common.v1 import controller_pb2 as pb
from cobalt_common.v1 import controller_pb2_grpc as pb_grpc
from cobalt_controller._servicer import ControllerServicer

pytestmark = pytest.mark.unit

RPC_NAMES = sorted(m.name for m in pb.DESCRIPTOR.services_by_name["Controller"].methods)


class _Registry:
    """Stands in for a grpc server: keeps what ``add_ControllerServicer_to_server`` registers."""

    def __init__(self) -> None:
        self.handlers: dict[str, Any] = {}

    def add_generic_rpc_handlers(self, handlers: Any) -> None:
        pass

    def add_registered_method_handlers(self, service: str, handlers: dict[str, Any]) -> None:
        self.handlers = handlers


class _Aborted(Exception):
    pass


class _Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    def set_trailing_metadata(self, metadata: Any) -> None:
        pass

    def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise _Aborted(details)


def _servicer() -> ControllerServicer:
    scheduler: Any = SimpleNamespace(state=None)
    unused: Any = None
    return ControllerServicer(scheduler, unused, unused, unused, {}, lambda: None, None)


@pytest.mark.parametrize("name", RPC_NAMES)
def test_every_rpc_of_the_service_is_implemented_by_the_servicer(name: str) -> None:
    generated = getattr(pb_grpc.ControllerServicer, name)
    assert getattr(ControllerServicer, name) is not generated, (
        f"ControllerServicer does not implement {name}: grpc would answer UNIMPLEMENTED"
    )


def test_registration_hands_every_deployment_rpc_to_the_deployment_handlers() -> None:
    registry = _Registry()
    pb_grpc.add_ControllerServicer_to_server(_servicer(), registry)
    assert sorted(registry.handlers) == RPC_NAMES
    requests = {
        "DeploymentCreate": pb.DeploymentCreateRequest(),
        "DeploymentGet": pb.DeploymentGetRequest(name="d"),
        "DeploymentList": pb.DeploymentListRequest(),
        "DeploymentTeardown": pb.DeploymentGetRequest(name="d"),
        "DeploymentTokenRotate": pb.DeploymentGetRequest(name="d"),
        "DeploymentEvents": pb.DeploymentEventsRequest(name="d"),
        "DeploymentLogs": pb.DeploymentLogsRequest(name="d"),
        "DeploymentMetrics": pb.DeploymentGetRequest(name="d"),
        "ReplicaReady": pb.ReplicaReadyRequest(deployment="d"),
    }
    assert set(requests) == {n for n in RPC_NAMES if n.startswith("Deployment")} | {"ReplicaReady"}
    for name, request in requests.items():
        context = _Context()
        with pytest.raises(_Aborted):
            registry.handlers[name].unary_unary(request, context)
        assert context.code == grpc.StatusCode.FAILED_PRECONDITION, name
        assert "does not run deployments" in context.details, name


def test_reusing_the_results_of_an_unknown_dispatch_is_not_found_with_advice() -> None:
    from cobalt_controller.state.memory import MemoryStateStore

    servicer = _servicer()
    servicer.state = MemoryStateStore()
    context = _Context()
    request = pb.DispatchCreateRequest(reuse_dispatch_id="0" * 32)
    with pytest.raises(_Aborted):
        servicer.DispatchCreate(request, context)
    assert context.code == grpc.StatusCode.NOT_FOUND
    assert "to reuse results from" in context.details
    assert "`cobalt dispatches` lists them" in context.details
