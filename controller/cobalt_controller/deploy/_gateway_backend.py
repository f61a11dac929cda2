"""What the gateway tells the deployment manager, and the thread pool that carries it.

The gateway's loop never blocks on the manager: every call to the
:class:`Backend` goes through :class:`Offload`, onto a small thread pool.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from cobalt_controller.deploy._autoscaler import ScaleEvent

log = logging.getLogger("cobalt.gateway")


class Backend(Protocol):
    """What the gateway tells the deployment manager; called on a worker thread."""

    def wake(self, name: str) -> None:
        """A request waits and no replica serves ``name``: start one now."""

    def replica_suspect(self, name: str, replica_id: str) -> None:
        """A request could not reach the replica; find out whether it lives."""

    def replica_drained(self, name: str, replica_id: str) -> None:
        """A draining replica has no request left (or its grace ran out): stop it."""

    def scaled(self, name: str, target: int | None, events: list[ScaleEvent]) -> None:
        """The autoscaler changed the replica count (``target``) and/or has events."""


class Offload:
    """Runs calls to the manager off the gateway's loop, logging any that fail."""

    def __init__(self, max_workers: int = 4) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=max_workers, thread_name_prefix="cobalt-gateway"
        )

    def __call__(self, fn: Callable[..., None], *args: Any) -> None:
        def run() -> None:
            try:
                fn(*args)
            except Exception:
                log.exception("deployment manager call %s failed", getattr(fn, "__name__", fn))

        with contextlib.suppress(RuntimeError):  # shutting down
            self._pool.submit(run)

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
