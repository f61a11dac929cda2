"""Fan-out of task and dispatch changes to clients watching a dispatch."""

from __future__ import annotations

import queue
import threading
import time

from cobalt_common.v1 import controller_pb2 as pb
from cobalt_controller._convert import dispatch_to_pb, task_to_pb
from cobalt_controller.dispatch._model import Dispatch, Task


class EventHub:
    """Subscribers get every change after it was committed. Publishing costs
    nothing for dispatches nobody watches."""

    def __init__(self) -> None:
        self._subscribers: dict[str, list[queue.SimpleQueue[pb.DispatchEvent | None]]] = {}
        self._lock = threading.Lock()

    def subscribe(self, dispatch_id: str) -> queue.SimpleQueue[pb.DispatchEvent | None]:
        q: queue.SimpleQueue[pb.DispatchEvent | None] = queue.SimpleQueue()
        with self._lock:
            self._subscribers.setdefault(dispatch_id, []).append(q)
        return q

    def unsubscribe(self, dispatch_id: str, q: queue.SimpleQueue[pb.DispatchEvent | None]) -> None:
        with self._lock:
            subs = self._subscribers.get(dispatch_id, [])
            if q in subs:
                subs.remove(q)
            if not subs:
                self._subscribers.pop(dispatch_id, None)

    def publish(self, d: Dispatch, t: Task | None) -> None:
        subs = self._subscribers.get(d.dispatch_id)
        if not subs:
            return
        if t is None:
            event = pb.DispatchEvent(
                dispatch_id=d.dispatch_id, time=time.time(), dispatch=dispatch_to_pb(d)
            )
        else:
            event = pb.DispatchEvent(
                dispatch_id=d.dispatch_id, time=time.time(), task=task_to_pb(t)
            )
        with self._lock:
            for q in list(subs):
                q.put(event)
