"""What the test tiers share: waiting for a condition, and an event loop on a thread.

Test modules import it by name (``from support import wait_for``), as they do
``fuzz_support`` and ``money_cases``: pytest puts ``tests/`` on the path.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def wait_for(
    check: Callable[[], T], timeout: float = 20.0, what: str = "", interval: float = 0.05
) -> T:
    """Calls ``check`` until it returns something true, and returns that.

    Fails the test after ``timeout`` seconds, saying what it waited for
    (``what``, or ``check`` itself when that is not given).
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what or check}")
        time.sleep(interval)


class Loop:
    """An asyncio event loop on a daemon thread, for servers a synchronous test talks to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Runs ``coro`` on the loop and returns its result (at most 10 s)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def close(self) -> None:
        """Cancels what still runs on the loop, then stops it and its thread."""

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self.run(cancel_all())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
