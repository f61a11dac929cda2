"""Which functions a warm worker holds unpickled, as its executor keeps count.

A worker keeps the functions it ran, so a function is sent to it once and
unpickled once. The executor decides what the worker keeps: it remembers the
last :data:`LIMIT` functions it sent and, when it forgets one, tells the
worker to drop it too (``WorkerTask.forget_functions``). The worker never
drops one on its own, so a function this count says the worker holds, the
worker holds, and is never sent a task without the function's bytes.
"""

from __future__ import annotations

from collections import OrderedDict

LIMIT = 256
"""Functions a worker keeps unpickled at most."""


class KnownFunctions:
    """The functions one worker holds, least recently used first.

    Example:
        >>> known = KnownFunctions(limit=2)
        >>> for sha in ("a", "b", "a", "c"):
        ...     if not known.holds(sha):
        ...         known.add(sha)
        >>> known.take_forgotten(), known.holds("b"), known.holds("a")
        (['b'], False, True)
    """

    def __init__(self, limit: int | None = None) -> None:
        self._held: OrderedDict[str, None] = OrderedDict()
        self._forgotten: list[str] = []
        self._limit = max(LIMIT if limit is None else limit, 1)

    def holds(self, sha256: str) -> bool:
        """Whether the worker holds this function (counting it as used now)."""
        if sha256 in self._held:
            self._held.move_to_end(sha256)
            return True
        return False

    def add(self, sha256: str) -> None:
        """The function goes to the worker now; the least recently used one
        beyond the limit is to be forgotten."""
        self._held[sha256] = None
        while len(self._held) > self._limit:
            self._forgotten.append(self._held.popitem(last=False)[0])

    def drop(self, sha256: str) -> None:
        """The worker may not hold this function (its task failed, perhaps while
        unpickling it): it is sent again next time, and the worker drops its copy."""
        if self._held.pop(sha256, False) is None:
            self._forgotten.append(sha256)

    def take_forgotten(self) -> list[str]:
        """The functions the worker is to drop with the next task it is sent."""
        forgotten, self._forgotten = self._forgotten, []
        return forgotten
