"""core/v1 Events, written as the controllers' event recorders write them: one Event per
(object, reason, message), its ``count`` and ``lastTimestamp`` bumped when it repeats."""

from __future__ import annotations

from ._kinds import EVENTS
from ._meta import Json, new_uid, random_hex, timestamp
from ._store import Store


class Recorder:
    def __init__(self, store: Store) -> None:
        self._store = store
        self._names: dict[tuple[str, str, str], str] = {}

    def record(
        self,
        involved: Json,
        reason: str,
        message: str,
        *,
        warning: bool = False,
        component: str,
        host: str = "",
    ) -> None:
        meta = involved["metadata"]
        namespace = meta.get("namespace") or "default"
        key = (meta["uid"], reason, message)
        now = timestamp()
        with self._store.lock:
            name = self._names.get(key)
            if name is not None:

                def bump(event: Json) -> None:
                    event["count"] = event.get("count", 1) + 1
                    event["lastTimestamp"] = now

                if self._store.update(EVENTS.plural, namespace, name, bump) is not None:
                    return
            name = f"{meta['name']}.{random_hex(16)}"
            self._names[key] = name
            source: Json = {"component": component}
            if host:
                source["host"] = host
            self._store.add(
                EVENTS.plural,
                {
                    "apiVersion": "v1",
                    "kind": "Event",
                    "metadata": {
                        "name": name,
                        "namespace": namespace,
                        "uid": new_uid(),
                        "creationTimestamp": now,
                    },
                    "involvedObject": {
                        "kind": involved.get("kind", ""),
                        "namespace": namespace,
                        "name": meta["name"],
                        "uid": meta["uid"],
                        "apiVersion": involved.get("apiVersion", ""),
                        "resourceVersion": meta.get("resourceVersion", ""),
                    },
                    "reason": reason,
                    "message": message,
                    "source": source,
                    "firstTimestamp": now,
                    "lastTimestamp": now,
                    "count": 1,
                    "type": "Warning" if warning else "Normal",
                    "eventTime": None,
                    "reportingComponent": component,
                    "reportingInstance": host,
                },
            )
