"""One asyncio event loop on a private thread, on which every SSH connection of its owner runs.

asyncssh is asynchronous and executors are synchronous: :class:`LoopRunner`
lets a synchronous caller run a coroutine there and wait for its result with
a bound. Each executor owns its runner (nothing here is global), and several
:class:`~cobalt_executors.ssh._remote.SshHost` objects may share one.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class LoopRunner:
    """An asyncio event loop running on a daemon thread of its own.

    Args:
        name: the thread's name, for debuggers and thread dumps.

    Example:
        >>> runner = LoopRunner()
        >>> async def answer() -> int:
        ...     return 42
        >>> runner.call(answer(), timeout_s=5)
        42
        >>> runner.close()
    """

    def __init__(self, name: str = "cobalt-ssh") -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=name, daemon=True)
        self._thread.start()
        self._closed = False

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        """The event loop (for scheduling callbacks on it, not for running it)."""
        return self._loop

    def call(self, coro: Coroutine[Any, Any, T], timeout_s: float | None) -> T:
        """Runs ``coro`` on the loop and returns its result, or raises its exception.

        Raises:
            TimeoutError: ``coro`` did not finish within ``timeout_s`` seconds;
                it is cancelled.
            RuntimeError: the runner is closed.
        """
        if self._closed:
            coro.close()
            raise RuntimeError("the SSH event loop is closed")
        if threading.current_thread() is self._thread:
            coro.close()
            raise RuntimeError("LoopRunner.call() would wait on its own thread forever")
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"did not finish within {timeout_s:g} s") from None

    def close(self, timeout_s: float = 5.0) -> None:
        """Cancels what still runs on the loop, stops it and joins its thread."""
        if self._closed:
            return
        self._closed = True

        async def cancel_all() -> None:
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            asyncio.run_coroutine_threadsafe(cancel_all(), self._loop).result(timeout_s)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self._loop.close()
