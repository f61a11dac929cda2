"""Scoped credentials: the registry, and what each credential may call."""

from __future__ import annotations

import uuid

import pytest

from cobalt_common.deploy import deploy_task_key, deploy_task_service
from cobalt_common.v1 import controller_pb2 as pb
from cobalt_controller._authorize import Authorizer, Denied
from cobalt_controller._credentials import (
    Credentials,
    ReplicaScope,
    TaskScope,
    UserScope,
    credential_sha256,
)
from cobalt_controller.state import DispatchRow, MemoryStateStore, NodeRow, WriteBatch

pytestmark = pytest.mark.unit

USER = "the-users-token"
ROOT_INPUT, ROOT_FN, ROOT_OUT = "1" * 64, "2" * 64, "3" * 64
CHILD_OUT, GRANDCHILD_OUT = "4" * 64, "5" * 64
OTHER_INPUT, OTHER_OUT = "6" * 64, "7" * 64
UNKNOWN = "8" * 64


def _store(dispatch_id: str, parent: str | None, batch: WriteBatch, *shas: str) -> None:
    value, function, output = shas
    row = DispatchRow(dispatch_id, "wf", "RUNNING", 1.0, output_node=1, task_count=1)
    row.parent_dispatch_id, row.parent_node_id = parent, 1 if parent else None
    nodes = [
        NodeRow(dispatch_id, 0, ":parameter:", "parameter", "COMPLETED", value_sha256=value),
        NodeRow(dispatch_id, 1, "task", "electron", "RUNNING", function_sha256=function),
    ]
    nodes[1].output_sha256 = output
    batch.new_dispatches.append((row, nodes))


class World:
    """Dispatch ``root`` with sublattice ``child`` (and its ``grandchild``),
    and an unrelated dispatch ``other``."""

    def __init__(self) -> None:
        self.root, self.child, self.grandchild, self.other = (uuid.uuid4().hex for _ in range(4))
        batch = WriteBatch()
        _store(self.root, None, batch, ROOT_INPUT, ROOT_FN, ROOT_OUT)
        _store(self.child, self.root, batch, "a" * 64, "b" * 64, CHILD_OUT)
        _store(self.grandchild, self.child, batch, "c" * 64, "d" * 64, GRANDCHILD_OUT)
        _store(self.other, None, batch, OTHER_INPUT, "e" * 64, OTHER_OUT)
        self.state = MemoryStateStore()
        self.state.apply(batch)
        self.credentials = Credentials(USER)
        self.authorizer = Authorizer(self.credentials, self.state)

    def task(self, dispatch_id: str = "", node_id: int = 1, deploys: str = "") -> str:
        dispatch_id = dispatch_id or self.root
        key = f"{dispatch_id}/{node_id}/1"
        return self.credentials.mint(key, TaskScope(key, dispatch_id, node_id, deploys))

    def allowed(self, credential: str, rpc: str, request: object) -> bool:
        answer = self.authorizer.authorize(credential, rpc, request)
        if isinstance(answer, Denied):
            assert answer.status == "permission_denied", answer
            assert "needs the user's token" in answer.message
            return False
        return True


@pytest.fixture
def world() -> World:
    return World()


# -- the registry --------------------------------------------------------------------


def test_each_credential_is_new_random_and_unrelated_to_the_others(world: World) -> None:
    minted = [world.task(node_id=i) for i in range(50)]
    assert len(set(minted)) == 50 and USER not in minted
    assert all(len(c) >= 43 for c in minted), "32 random bytes each"
    prefixes = {c[:8] for c in minted}
    assert len(prefixes) == 50, "no shared structure between credentials"


def test_a_credential_names_its_holder_until_it_is_revoked(world: World) -> None:
    credential = world.task()
    scope = world.credentials.scope(credential)
    assert isinstance(scope, TaskScope) and scope.dispatch_id == world.root
    world.credentials.revoke(f"{world.root}/1/1")
    assert world.credentials.scope(credential) is None
    answer = world.authorizer.authorize(credential, "BlobGet", pb.BlobGetRequest(sha256=ROOT_OUT))
    assert isinstance(answer, Denied) and answer.status == "unauthenticated"
    assert "expired" in answer.message


def test_a_restarted_controller_accepts_a_taken_back_attempt_s_credential_by_its_hash(
    world: World,
) -> None:
    credential = world.task()
    key = f"{world.root}/1/1"
    after = Credentials(USER)  # a new controller: nothing in memory
    assert after.scope(credential) is None
    after.restore(key, credential_sha256(credential), TaskScope(key, world.root, 1))
    scope = after.scope(credential)
    assert isinstance(scope, TaskScope) and scope.attempt_id == key
    assert after.scope(credential[:-1] + ("A" if credential[-1] != "A" else "B")) is None
    assert after.scope(credential_sha256(credential)) is None, "the hash is no credential"
    after.revoke(key)
    assert after.scope(credential) is None
    with pytest.raises(ValueError, match="not a SHA-256"):
        after.restore(key, "abcd", TaskScope(key, world.root, 1))


def test_minting_again_for_the_same_attempt_replaces_the_credential(world: World) -> None:
    first = world.task()
    second = world.task()
    assert world.credentials.scope(first) is None
    assert world.credentials.scope(second) is not None
    assert len(world.credentials) == 1


def test_the_users_token_is_the_user_and_a_near_miss_is_nobody(world: World) -> None:
    assert world.credentials.scope(USER) == UserScope()
    credential = world.task()
    for guess in ("", USER[:-1], USER + "x", credential[:-1], credential + "x", "\udcff"):
        assert world.credentials.scope(guess) is None, guess


# -- tasks ---------------------------------------------------------------------------


def test_a_task_reads_the_payloads_of_its_dispatch_and_its_sublattices_only(
    world: World,
) -> None:
    credential = world.task()
    for sha in (ROOT_INPUT, ROOT_FN, ROOT_OUT, CHILD_OUT, GRANDCHILD_OUT):
        assert world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=sha)), sha
    for sha in (OTHER_INPUT, OTHER_OUT, UNKNOWN, "not-a-sha"):
        assert not world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=sha)), sha


def test_a_sublattices_task_does_not_read_its_parents_payloads(world: World) -> None:
    credential = world.task(world.child)
    assert world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=GRANDCHILD_OUT))
    assert not world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=ROOT_INPUT))


def test_blob_has_reports_what_a_task_may_not_read_as_missing(world: World) -> None:
    credential = world.task()
    scope = world.credentials.scope(credential)
    assert scope is not None
    assert world.allowed(credential, "BlobHas", pb.BlobHasRequest(sha256=[ROOT_OUT, OTHER_OUT]))
    assert world.authorizer.unreadable(scope, [ROOT_OUT, OTHER_OUT, UNKNOWN]) == {
        OTHER_OUT,
        UNKNOWN,
    }
    assert world.authorizer.unreadable(UserScope(), [OTHER_OUT]) == set()


def test_a_task_may_upload_and_then_read_and_name_what_it_uploaded(world: World) -> None:
    credential = world.task()
    assert world.allowed(credential, "BlobPut", None)
    assert not world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=OTHER_OUT))
    world.credentials.note_upload(credential, OTHER_OUT)
    assert world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=OTHER_OUT))


def _sublattice(
    parent: str, node_id: int, *shas: str, inline: str = ""
) -> pb.DispatchCreateRequest:
    req = pb.DispatchCreateRequest(name="sub", parent_dispatch_id=parent, parent_node_id=node_id)
    req.nodes.add(node_id=0, kind=pb.NODE_KIND_PARAMETER, value_sha256=shas[0])
    for i, sha in enumerate(shas[1:], 1):
        req.nodes.add(node_id=i, kind=pb.NODE_KIND_ELECTRON, function_sha256=sha)
    if inline:
        req.payloads.add(sha256=inline, data=b"x")
    return req


def test_a_task_creates_dispatches_only_as_its_own_sublattices(world: World) -> None:
    credential = world.task()
    assert world.allowed(credential, "DispatchCreate", _sublattice(world.root, 1, ROOT_OUT))
    assert world.allowed(credential, "DispatchCreate", _sublattice(world.child, 1, CHILD_OUT))
    refused = [
        _sublattice("", 0, ROOT_OUT),
        _sublattice(world.other, 1, ROOT_OUT),
        _sublattice(world.root, 2, ROOT_OUT),
        _sublattice(uuid.uuid4().hex, 1, ROOT_OUT),
    ]
    for req in refused:
        assert not world.allowed(credential, "DispatchCreate", req), req


def test_a_sublattice_may_not_name_a_payload_its_task_cannot_read(world: World) -> None:
    credential = world.task()
    stolen = _sublattice(world.root, 1, OTHER_INPUT, ROOT_FN)
    assert not world.allowed(credential, "DispatchCreate", stolen)
    inline = _sublattice(world.root, 1, UNKNOWN, ROOT_FN, inline=UNKNOWN)
    assert world.allowed(credential, "DispatchCreate", inline), "sent inline: it holds it"
    world.credentials.note_upload(credential, OTHER_INPUT)
    assert world.allowed(credential, "DispatchCreate", stolen), "uploaded: it holds it"


def test_a_sublattice_keeps_only_a_lattice_and_inputs_its_task_may_read_and_reuses_nothing(
    world: World,
) -> None:
    credential = world.task()
    own = _sublattice(world.root, 1, ROOT_OUT, ROOT_FN, inline=UNKNOWN)
    own.lattice_sha256, own.inputs_sha256 = UNKNOWN, ROOT_OUT
    assert world.allowed(credential, "DispatchCreate", own)
    stolen = _sublattice(world.root, 1, ROOT_OUT, ROOT_FN)
    stolen.inputs_sha256 = OTHER_INPUT
    assert not world.allowed(credential, "DispatchCreate", stolen)
    reusing = _sublattice(world.root, 1, ROOT_OUT, ROOT_FN)
    reusing.reuse_dispatch_id = world.other
    assert not world.allowed(credential, "DispatchCreate", reusing)
    reusing.reuse_dispatch_id = world.root
    assert not world.allowed(credential, "DispatchCreate", reusing)


def test_a_task_reads_its_own_dispatch_and_reads_or_cancels_its_sublattices(
    world: World,
) -> None:
    credential = world.task()
    requests = {
        "DispatchGet": pb.DispatchGetRequest,
        "TaskList": pb.TaskListRequest,
        "NodeGet": pb.NodeGetRequest,
        "DispatchWatch": pb.DispatchWatchRequest,
        "DispatchCancel": pb.DispatchCancelRequest,
    }
    for rpc, request in requests.items():
        for below in (world.child, world.grandchild):
            assert world.allowed(credential, rpc, request(dispatch_id=below)), (rpc, below)
        assert not world.allowed(credential, rpc, request(dispatch_id=world.other)), rpc
        own = world.allowed(credential, rpc, request(dispatch_id=world.root))
        assert own == (rpc in ("DispatchGet", "TaskList", "NodeGet")), rpc
    sub = world.task(world.child)
    assert not world.allowed(sub, "DispatchGet", pb.DispatchGetRequest(dispatch_id=world.root))


ADMIN_ONLY = {
    "ControllerStop": pb.ControllerStopRequest(),
    "ControllerStatus": pb.ControllerStatusRequest(),
    "DispatchList": pb.DispatchListRequest(),
    "DispatchEstimate": pb.DispatchCreateRequest(),
    "CostSummary": pb.CostSummaryRequest(),
    "DeploymentList": pb.DeploymentListRequest(),
    "DeploymentTeardown": pb.DeploymentGetRequest(name="svc"),
    "DeploymentTokenRotate": pb.DeploymentGetRequest(name="svc"),
    "DeploymentEvents": pb.DeploymentEventsRequest(name="svc"),
    "DeploymentLogs": pb.DeploymentLogsRequest(name="svc"),
    "DeploymentMetrics": pb.DeploymentGetRequest(name="svc"),
    "ReplicaReady": pb.ReplicaReadyRequest(deployment="svc", replica_id="r1"),
    "BlobUploadUrl": pb.BlobUploadUrlRequest(sha256=ROOT_OUT, size=10),
}


@pytest.mark.parametrize("rpc", ADMIN_ONLY)
def test_a_task_cannot_administer(world: World, rpc: str) -> None:
    for credential in (world.task(), world.task(deploys="svc", node_id=2)):
        assert not world.allowed(credential, rpc, ADMIN_ONLY[rpc])
    assert world.authorizer.authorize(USER, rpc, ADMIN_ONLY[rpc]) == UserScope()


def test_only_a_deploy_task_reaches_a_deployment_and_only_its_own(world: World) -> None:
    plain, deployer = world.task(), world.task(node_id=2, deploys="svc")
    create = pb.DeploymentCreateRequest(name="svc", service_sha256=UNKNOWN)
    create.payloads.add(sha256=UNKNOWN, data=b"x")
    get = pb.DeploymentGetRequest(name="svc")
    assert world.allowed(deployer, "DeploymentCreate", create)
    assert world.allowed(deployer, "DeploymentGet", get)
    assert not world.allowed(plain, "DeploymentCreate", create)
    assert not world.allowed(plain, "DeploymentGet", get)
    for name in ("other", "svc2"):
        assert not world.allowed(deployer, "DeploymentGet", pb.DeploymentGetRequest(name=name))
        other = pb.DeploymentCreateRequest(name=name, service_sha256=UNKNOWN)
        assert not world.allowed(deployer, "DeploymentCreate", other)
    stolen = pb.DeploymentCreateRequest(name="svc", service_sha256=OTHER_OUT)
    assert not world.allowed(deployer, "DeploymentCreate", stolen)


def test_a_deploy_task_is_marked_by_its_function_key() -> None:
    assert deploy_task_service(deploy_task_key("best-model")) == "best-model"
    for key in ("", "mod.fn", "cobalt._deploy.deploy Not A Name", "cobalt._deploy.deploy "):
        assert deploy_task_service(key) == ""


# -- replicas ------------------------------------------------------------------------


def test_a_replica_says_only_itself_is_ready_and_reads_only_its_payloads(world: World) -> None:
    key = "replica/svc/r1-abc"
    credential = world.credentials.mint(
        key, ReplicaScope("svc", "r1-abc", frozenset({ROOT_FN, ROOT_INPUT}))
    )
    ready = pb.ReplicaReadyRequest(deployment="svc", replica_id="r1-abc")
    assert world.allowed(credential, "ReplicaReady", ready)
    for other in (
        pb.ReplicaReadyRequest(deployment="svc", replica_id="r1-def"),
        pb.ReplicaReadyRequest(deployment="other", replica_id="r1-abc"),
    ):
        assert not world.allowed(credential, "ReplicaReady", other)
    assert world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=ROOT_FN))
    assert not world.allowed(credential, "BlobGet", pb.BlobGetRequest(sha256=ROOT_OUT))
    for rpc in ("DispatchCreate", "DispatchGet", "DeploymentGet", "BlobPut", "ControllerStop"):
        assert not world.allowed(
            credential, rpc, None if rpc == "BlobPut" else pb.DispatchGetRequest()
        )
    world.credentials.revoke(key)
    answer = world.authorizer.authorize(credential, "ReplicaReady", ready)
    assert isinstance(answer, Denied) and answer.status == "unauthenticated"
