"""Dynamic batching: concurrent requests to one endpoint, coalesced into one call.

A replica keeps one :class:`Batcher` per batched endpoint, on its event loop.
Requests wait in a queue; a batch runs once ``max_size`` requests wait or
``max_wait_ms`` passed since the first of them arrived (one timer, no
polling). Batches of one endpoint run one at a time, and requests that
arrive meanwhile form the next. The function gets each body field as a list,
one element per request in arrival order, and returns one result per
request:

* element ``i`` answers request ``i``; an ``Exception`` there fails request
  ``i`` alone;
* a return that is not a list or tuple of the batch's length fails every
  request of the batch, saying what was wrong;
* a call that raises is split: each request runs again alone, so only the
  inputs that fail get errors.

A request whose client leaves before its batch runs is dropped from it.

Example:
    >>> import asyncio
    >>> async def double(columns):
    ...     return [2 * x for x in columns["x"]]
    >>> batcher = Batcher(
    ...     "double", Batch(max_size=4, max_wait_ms=1), double,
    ...     answer=lambda value, rid: (200, repr(value).encode()),
    ...     fail=lambda exc, rids: (500, str(exc).encode()),
    ... )
    >>> async def three_callers():
    ...     return await asyncio.gather(*(batcher.submit({"x": i}) for i in (1, 2, 3)))
    >>> asyncio.run(three_callers())
    [(200, b'2'), (200, b'4'), (200, b'6')]
    >>> batcher.sizes()
    {'3': 1}
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections import Counter, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from cobalt_common.deploy import Batch

Answer = tuple[int, bytes]
"""An HTTP status and its JSON body."""

Run = Callable[[dict[str, list[Any]]], Awaitable[Any]]
"""Calls the endpoint with each body field as a list; returns what it returned."""


class BatchReturnError(Exception):
    """A batched endpoint returned something other than one result per request."""


@dataclass(slots=True)
class _Waiting:
    kwargs: dict[str, Any]
    request_id: str
    future: asyncio.Future[Answer]
    arrived: float


@dataclass(slots=True)
class _Lane:
    """The queue and the worker of one event loop (tests run several loops in turn)."""

    loop: asyncio.AbstractEventLoop
    queue: deque[_Waiting] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    worker: asyncio.Task[None] | None = None


class Batcher:
    """Gathers one endpoint's requests into batches and answers each request.

    Args:
        name: the endpoint's name, for messages.
        batch: its ``max_size`` and ``max_wait_ms``.
        run: calls the endpoint with one list per body field.
        answer: ``(value, request_id) -> (200, body)``, or a 500 when the
            value cannot be sent.
        fail: ``(exception, request ids) -> (500, body)``; it logs the error.
    """

    def __init__(
        self,
        name: str,
        batch: Batch,
        run: Run,
        *,
        answer: Callable[[Any, str], Answer],
        fail: Callable[[BaseException, str], Answer],
    ) -> None:
        self.name = name
        self.max_size = batch.max_size
        self.max_wait_s = batch.max_wait_ms / 1000
        self._run = run
        self._answer = answer
        self._fail = fail
        self._sizes: Counter[int] = Counter()
        self._lane: _Lane | None = None

    def sizes(self) -> dict[str, int]:
        """How many calls had each batch size: ``{"1": 3, "32": 40}``."""
        return {str(size): count for size, count in sorted(self._sizes.items())}

    async def submit(self, kwargs: dict[str, Any], request_id: str = "") -> Answer:
        """Queue one request's (validated) fields; its answer once its batch ran.

        Cancelling the caller before the batch runs drops the request from it.
        """
        loop = asyncio.get_running_loop()
        lane = self._lane
        if lane is None or lane.loop is not loop:
            lane = self._lane = _Lane(loop)
        if lane.worker is None or lane.worker.done():
            lane.worker = loop.create_task(self._work(lane), name=f"cobalt-batch-{self.name}")
        waiting = _Waiting(kwargs, request_id, loop.create_future(), loop.time())
        lane.queue.append(waiting)
        if len(lane.queue) == 1 or len(lane.queue) >= self.max_size:
            lane.wake.set()  # the first starts the clock; a full queue runs at once
        return await waiting.future

    async def _work(self, lane: _Lane) -> None:
        queue = lane.queue
        while True:
            lane.wake.clear()
            while queue and queue[0].future.done():
                queue.popleft()  # its client left before the batch ran
            if not queue:
                await lane.wake.wait()
                continue
            if len(queue) < self.max_size:
                delay = queue[0].arrived + self.max_wait_s - lane.loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):  # a full queue wakes it early
                        await asyncio.wait_for(lane.wake.wait(), delay)
                    continue
            batch: list[_Waiting] = []
            while queue and len(batch) < self.max_size:
                waiting = queue.popleft()
                if not waiting.future.done():
                    batch.append(waiting)
            if batch:
                await self._dispatch(batch)

    async def _dispatch(self, batch: list[_Waiting]) -> None:
        try:
            await self._call(batch)
        finally:
            for waiting in batch:
                if not waiting.future.done():
                    waiting.future.set_exception(
                        RuntimeError(f"the batch of {self.name} ended without an answer")
                    )

    async def _call(self, batch: list[_Waiting]) -> None:
        self._sizes[len(batch)] += 1
        columns = {name: [w.kwargs[name] for w in batch] for name in batch[0].kwargs}
        try:
            results = await self._run(columns)
        except Exception as exc:
            if len(batch) == 1:
                _settle(batch[0], self._fail(exc, batch[0].request_id))
                return
            print(
                f"a batch of {len(batch)} requests to {self.name} raised "
                f"{type(exc).__name__}: {exc}; running each request alone "
                f"(requests {_ids(batch)})",
                file=sys.stderr,
                flush=True,
            )
            for waiting in batch:
                if not waiting.future.done():
                    await self._call([waiting])
            return
        problem = self._problem(results, len(batch))
        if problem:
            answer = self._fail(BatchReturnError(problem), _ids(batch))
            for waiting in batch:
                _settle(waiting, answer)
            return
        for waiting, value in zip(batch, results, strict=True):
            if isinstance(value, BaseException):
                _settle(waiting, self._fail(value, waiting.request_id))
            else:
                _settle(waiting, self._answer(value, waiting.request_id))

    def _problem(self, results: Any, size: int) -> str:
        """What is wrong with a batch's return value; "" when nothing is."""
        requests = f"{size} request{'s' if size != 1 else ''}"
        if not isinstance(results, list | tuple):
            return (
                f"the batched endpoint {self.name} returned {type(results).__name__} for a "
                f"batch of {requests}; it must return a list with one result per request, "
                "in the order of its inputs."
            )
        if len(results) != size:
            return (
                f"the batched endpoint {self.name} returned {len(results)} result"
                f"{'s' if len(results) != 1 else ''} for a batch of {requests}; it must "
                "return exactly one result per request, in the order of its inputs."
            )
        return ""


def _settle(waiting: _Waiting, answer: Answer) -> None:
    if not waiting.future.done():  # its client may have left while the batch ran
        waiting.future.set_result(answer)


def _ids(batch: list[_Waiting]) -> str:
    return ", ".join(w.request_id or "-" for w in batch)
