"""Object storage with one resourceVersion counter and a bounded history of watch events,
as etcd and the API server's watch cache provide them.

Every write takes the next resourceVersion, stamps it on the object and appends an event
(``ADDED``, ``MODIFIED``, ``DELETED``) to the history. A watch from a resourceVersion replays
the events after it; one older than the history holds is answered ``410 Expired: too old
resource version``. Objects handed out are copies: nothing outside the store changes what it
holds.
"""

from __future__ import annotations

import collections
import copy
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ._errors import ApiError, expired
from ._meta import Json


@dataclass(frozen=True, slots=True)
class Change:
    """One watch event: its resourceVersion, type, the object after it and (for
    ``MODIFIED``) the object before it, so that a selector can tell an object that stops
    matching (sent as ``DELETED``) from one that starts to (sent as ``ADDED``)."""

    rv: int
    type: str
    resource: str
    namespace: str
    obj: Json
    old: Json | None


Key = tuple[str, str]
"""(namespace, name); the namespace is empty for cluster-scoped objects."""


class Store:
    """All objects by resource. ``lock`` guards it and everything the controllers keep beside
    it; ``changed`` is notified on every write."""

    def __init__(self, history: int) -> None:
        self.lock = threading.RLock()
        self.changed = threading.Condition(self.lock)
        self._objects: dict[str, dict[Key, Json]] = collections.defaultdict(dict)
        self._history: collections.deque[Change] = collections.deque(maxlen=history)
        self._rv = 1
        self._compacted = 0

    @property
    def rv(self) -> int:
        return self._rv

    def _record(self, resource: str, kind: str, obj: Json, old: Json | None) -> Json:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)
        if self._history.maxlen is not None and len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        namespace = obj["metadata"].get("namespace", "")
        self._history.append(Change(self._rv, kind, resource, namespace, copy.deepcopy(obj), old))
        self.changed.notify_all()
        return copy.deepcopy(obj)

    def add(self, resource: str, obj: Json) -> Json:
        key = (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])
        with self.lock:
            stored = copy.deepcopy(obj)
            self._objects[resource][key] = stored
            return self._record(resource, "ADDED", stored, None)

    def get(self, resource: str, namespace: str, name: str) -> Json | None:
        with self.lock:
            found = self._objects[resource].get((namespace, name))
            return copy.deepcopy(found) if found is not None else None

    def peek(self, resource: str, namespace: str, name: str) -> Json | None:
        """The stored object itself, not a copy: for reading under ``lock`` only."""
        return self._objects[resource].get((namespace, name))

    def items(self, resource: str, namespace: str | None = None) -> list[Json]:
        """The stored objects themselves, sorted by namespace and name; read under ``lock``."""
        with self.lock:
            return [
                obj
                for key, obj in sorted(self._objects[resource].items())
                if namespace is None or key[0] == namespace
            ]

    def update(
        self, resource: str, namespace: str, name: str, change: Callable[[Json], None]
    ) -> Json | None:
        """Applies ``change`` to a copy of the object and stores it under a new resourceVersion
        when anything changed; returns the object as now stored (None when it is gone)."""
        with self.lock:
            current = self._objects[resource].get((namespace, name))
            if current is None:
                return None
            updated = copy.deepcopy(current)
            change(updated)
            if updated == current:
                return copy.deepcopy(current)
            self._objects[resource][(namespace, name)] = updated
            return self._record(resource, "MODIFIED", updated, copy.deepcopy(current))

    def remove(self, resource: str, namespace: str, name: str) -> Json | None:
        with self.lock:
            current = self._objects[resource].pop((namespace, name), None)
            if current is None:
                return None
            return self._record(resource, "DELETED", current, None)

    def changes_after(self, rv: int, resource: str, namespace: str | None) -> Iterator[Change]:
        """The history's events after ``rv`` for one resource; raises 410 when ``rv`` is older
        than the history reaches."""
        with self.lock:
            if rv < self._compacted:
                raise expired(f"too old resource version: {rv} ({self._compacted + 1})")
            events = [
                change
                for change in self._history
                if change.rv > rv
                and change.resource == resource
                and (namespace is None or change.namespace == namespace)
            ]
        return iter(events)


def parse_rv(text: str) -> int:
    """A resourceVersion from a query: the API server's 400 for one that is not a number."""
    try:
        value = int(text)
    except ValueError:
        raise ApiError(
            400,
            "BadRequest",
            f'invalid resource version "{text}": strconv.ParseUint: parsing "{text}": '
            "invalid syntax",
        ) from None
    if value < 0:
        raise ApiError(400, "BadRequest", f'invalid resource version "{text}"')
    return value
