"""What each credential may call: one decision, kept apart from the handlers.

:meth:`Authorizer.authorize` takes a credential, the RPC's name and its
request and answers with the holder's :data:`~cobalt_controller._credentials.Scope`
or a :class:`Denied`. The gRPC interceptor calls it before a handler runs; a
remote agent's protocol can call the same function with the same names.

The rules, for the credential of one attempt of node N of dispatch D:

- payloads (BlobGet; BlobHas reports others as missing): those a node of D
  or of a dispatch below D holds (its inputs, its dispatch's outputs, what
  its sublattices produced), and those it sent itself with BlobPut;
- BlobPut: allowed (a sublattice uploads its payloads);
- DispatchCreate: only a sublattice, ``parent_dispatch_id`` = D (with
  ``parent_node_id`` = N) or a dispatch below D, whose payloads (its lattice
  and inputs included) are sent inline, uploaded with this credential, or
  readable as above, and which reuses no other dispatch's results;
- DispatchGet, TaskList, NodeGet: D and the dispatches below it;
  DispatchWatch, DispatchCancel: the dispatches below D only;
- a lattice's deploy task (node function key ``cobalt._deploy.deploy <name>``):
  DeploymentCreate and DeploymentGet of deployment ``<name>`` only.

A replica's credential (replica R of deployment X) may call ReplicaReady for
R and read X's service and initializer arguments. The user's token may call
everything. Anything else is refused with ``permission_denied``; an unknown,
expired or revoked credential with ``unauthenticated``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from cobalt_common.checks import brief, is_sha256
from cobalt_controller._credentials import (
    Credentials,
    ReplicaScope,
    Scope,
    TaskScope,
    UserScope,
)
from cobalt_controller.agents._tokens import AgentScope
from cobalt_controller.state import StateStore

UNKNOWN_CREDENTIAL = (
    "missing, wrong or expired controller token; clients read it from controller.json in the "
    "controller's COBALT_HOME, and a task's or replica's own credential ends when it does."
)


@dataclass(frozen=True, slots=True)
class Denied:
    """Why a call is refused; ``status`` says whether the caller is unknown or not allowed."""

    status: Literal["unauthenticated", "permission_denied"]
    message: str


class Authorizer:
    """Decides every call made with a credential other than the user's token."""

    def __init__(self, credentials: Credentials, state: StateStore) -> None:
        self.credentials = credentials
        self.state = state

    def authorize(self, credential: str, rpc_name: str, request: Any) -> Scope | Denied:
        """The caller's scope if ``credential`` may call ``rpc_name`` with ``request``.

        ``request`` may be None for a client-streaming call (BlobPut), whose
        messages arrive after the decision.
        """
        scope = self.credentials.scope(credential)
        if scope is None:
            return Denied("unauthenticated", UNKNOWN_CREDENTIAL)
        if isinstance(scope, UserScope):
            return scope
        if isinstance(scope, TaskScope):
            why = self._task(scope, rpc_name, request)
        elif isinstance(scope, AgentScope):
            why = self._agent(scope, rpc_name)
        else:
            why = self._replica(scope, rpc_name, request)
        if why is None:
            return scope
        return Denied("permission_denied", f"{rpc_name} {why} needs the user's token.")

    def unreadable(self, scope: Scope, shas: Iterable[str]) -> set[str]:
        """Which of these payloads ``scope`` may not read (BlobHas reports them missing)."""
        if isinstance(scope, UserScope):
            return set()
        wanted = set(shas)
        if isinstance(scope, ReplicaScope):
            return wanted - scope.payloads
        if isinstance(scope, AgentScope):
            return wanted
        tree = self._tree(scope.dispatch_id)
        return {s for s in wanted if not self._readable(scope, s, tree)}

    # -- tasks -------------------------------------------------------------------------

    def _task(self, scope: TaskScope, rpc: str, request: Any) -> str | None:
        """None when allowed, else what was asked for, for the message."""
        holder = f"(task attempt {scope.attempt_id})"
        if rpc == "BlobGet":
            if self._readable(scope, request.sha256, self._tree(scope.dispatch_id)):
                return None
            return (
                f"of payload {brief(request.sha256, 16)}, which no node of dispatch "
                f"{scope.dispatch_id} or of its sublattices holds, {holder}"
            )
        if rpc in ("BlobHas", "BlobPut"):
            return None
        if rpc == "DispatchCreate":
            return self._dispatch_create(scope, request, holder)
        if rpc in ("DispatchGet", "TaskList", "NodeGet", "DispatchWatch", "DispatchCancel"):
            target = request.dispatch_id
            own = rpc in ("DispatchGet", "TaskList", "NodeGet") and target == scope.dispatch_id
            if own or target in self.state.descendant_dispatches(scope.dispatch_id):
                return None
            return (
                f"of dispatch {brief(target)}, which is not a sublattice of dispatch "
                f"{scope.dispatch_id}, {holder}"
            )
        if rpc in ("DeploymentCreate", "DeploymentGet") and scope.deploys:
            if request.name != scope.deploys:
                return (
                    f"of deployment {brief(request.name)} from the task that deploys "
                    f"{scope.deploys!r} {holder}"
                )
            if rpc == "DeploymentCreate":
                shas = [request.service_sha256, *(a.sha256 for a in request.args)]
                return self._unheld(scope, shas, request.payloads, holder)
            return None
        return f"from a task {holder}"

    def _dispatch_create(self, scope: TaskScope, request: Any, holder: str) -> str | None:
        parent = request.parent_dispatch_id
        if not parent:
            return f"of a dispatch that is not a sublattice {holder}"
        if parent == scope.dispatch_id:
            if request.parent_node_id != scope.node_id:
                return (
                    f"of a sublattice of node {request.parent_node_id} of dispatch {parent} "
                    f"from node {scope.node_id} {holder}"
                )
        elif parent not in self.state.descendant_dispatches(scope.dispatch_id):
            return (
                f"of a sublattice of dispatch {brief(parent)}, which is not dispatch "
                f"{scope.dispatch_id} or below it, {holder}"
            )
        if request.reuse_dispatch_id:
            return f"reusing the results of dispatch {brief(request.reuse_dispatch_id)} {holder}"
        shas = [n.value_sha256 or n.function_sha256 for n in request.nodes]
        shas += [n.function_sha256 for n in request.nodes if n.value_sha256 and n.function_sha256]
        shas += [request.lattice_sha256, request.inputs_sha256]
        return self._unheld(scope, shas, request.payloads, holder)

    def _unheld(self, scope: TaskScope, shas: list[str], inline: Any, holder: str) -> str | None:
        """Refuses a request naming a payload the task neither sent nor may read:
        naming another dispatch's payload would hand it to a task of the new one."""
        sent = {p.sha256 for p in inline}
        rest = {s for s in shas if s and s not in sent and s not in scope.uploaded}
        if not rest:
            return None
        tree = self._tree(scope.dispatch_id)
        for sha in sorted(rest):
            if is_sha256(sha) and not self._readable(scope, sha, tree):
                return f"naming payload {sha[:16]}..., which it neither sent nor may read, {holder}"
        return None

    def _tree(self, dispatch_id: str) -> set[str]:
        return {dispatch_id, *self.state.descendant_dispatches(dispatch_id)}

    def _readable(self, scope: TaskScope, sha: str, tree: set[str]) -> bool:
        if not is_sha256(sha):
            return False
        return sha in scope.uploaded or self.state.holds_payload(tree, sha)

    # -- agents ------------------------------------------------------------------------

    @staticmethod
    def _agent(scope: AgentScope, rpc: str) -> str | None:
        """An agent opens its stream and sends outputs; it reads payloads with the
        credential of the task that needs them."""
        if rpc in ("AgentConnect", "BlobPut", "BlobHas", "BlobUploadUrl"):
            return None
        return f"from an agent of executor {scope.executor!r}"

    # -- replicas ----------------------------------------------------------------------

    @staticmethod
    def _replica(scope: ReplicaScope, rpc: str, request: Any) -> str | None:
        holder = f"(replica {scope.replica_id} of deployment {scope.deployment!r})"
        if rpc == "ReplicaReady":
            if request.deployment == scope.deployment and request.replica_id == scope.replica_id:
                return None
            return (
                f"for replica {brief(request.replica_id)} of deployment "
                f"{brief(request.deployment)} {holder}"
            )
        if rpc == "BlobGet":
            if request.sha256 in scope.payloads:
                return None
            return f"of a payload other than its service and arguments {holder}"
        return f"from a replica {holder}"
