"""The resources the fake serves, each as the API server's REST mapping names it."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resource:
    """One REST resource: ``plural`` is the path segment, ``kind`` the object's kind."""

    plural: str
    kind: str
    group: str
    version: str
    namespaced: bool
    writable: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def qualified_resource(self) -> str:
        """``pods`` or ``jobs.batch``: how NotFound, AlreadyExists and Forbidden name it."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def qualified_kind(self) -> str:
        """``Pod`` or ``Job.batch``: how Invalid names it."""
        return f"{self.kind}.{self.group}" if self.group else self.kind

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    def details(self, name: str) -> dict[str, str]:
        """The ``details`` of a Status about one object of this resource."""
        out = {"name": name}
        if self.group:
            out["group"] = self.group
        out["kind"] = self.plural
        return out


PODS = Resource("pods", "Pod", "", "v1", namespaced=True, writable=True)
SECRETS = Resource("secrets", "Secret", "", "v1", namespaced=True, writable=True)
EVENTS = Resource("events", "Event", "", "v1", namespaced=True, writable=False)
NODES = Resource("nodes", "Node", "", "v1", namespaced=False, writable=False)
NAMESPACES = Resource("namespaces", "Namespace", "", "v1", namespaced=False, writable=False)
JOBS = Resource("jobs", "Job", "batch", "v1", namespaced=True, writable=True)

BY_PATH: dict[tuple[str, str], Resource] = {
    (resource.api_version, resource.plural): resource
    for resource in (PODS, SECRETS, EVENTS, NODES, NAMESPACES, JOBS)
}
"""Each resource by (``v1`` or ``batch/v1``, plural)."""
