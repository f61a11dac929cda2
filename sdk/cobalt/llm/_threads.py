"""How many torch threads a small decoding step runs on, chosen by measurement (CPUs).

A decoding step for one or two sequences multiplies one or two rows by each
weight. Split across every core, each of those small multiplies starts a
parallel region, and from the engine's own thread that start can cost more than
the work it splits: SmolLM2-135M with int4 weights on 2 cores gave one stream
46.5 tokens/s on one thread against 33.2 on two, two streams 65.5 against 57.7,
and four streams 93.0 against 98.4. A larger model's rows are long enough to
gain from every core. So for batches of up to :data:`SMALL_ROWS` rows, the
engine times steps on one thread and on all of them, and keeps the faster,
timing the other again now and then.
"""

from __future__ import annotations

SMALL_ROWS = 4
"""Batches of up to this many rows have their thread count measured; larger ones use
every thread."""
TRIALS = 4
"""Steps timed with each choice, per batch size, before the faster is kept."""
RETRY_EVERY = 256
"""Steps of one batch size after which the slower choice is timed once again."""
_WEIGHT = 0.25
"""How much a new time counts in a choice's moving average."""


class ThreadChoice:
    """Picks, per batch size, one thread or ``threads`` for a decoding step.

    Example:
        >>> choice = ThreadChoice(2)
        >>> for _ in range(TRIALS):
        ...     choice.timed(1, choice.pick(1), 0.010)  # trials on one thread
        >>> for _ in range(TRIALS):
        ...     choice.timed(1, choice.pick(1), 0.020)  # then on two
        >>> choice.pick(1), choice.pick(16)
        (1, 2)
    """

    def __init__(self, threads: int) -> None:
        self.threads = threads
        self._seconds: dict[tuple[int, int], float] = {}
        self._counts: dict[tuple[int, int], int] = {}
        self._steps: dict[int, int] = {}

    def pick(self, rows: int) -> int:
        """The threads the next step of ``rows`` rows runs on."""
        if rows > SMALL_ROWS or self.threads <= 1:
            return self.threads
        options = (1, self.threads)
        for threads in options:
            if self._counts.get((rows, threads), 0) < TRIALS:
                return threads
        steps = self._steps.get(rows, 0) + 1
        self._steps[rows] = steps
        fast, slow = sorted(options, key=lambda t: self._seconds[(rows, t)])
        return slow if steps % RETRY_EVERY == 0 else fast

    def timed(self, rows: int, threads: int, seconds: float) -> None:
        """A step of ``rows`` rows on ``threads`` threads took ``seconds``."""
        if rows > SMALL_ROWS or not 0.0 <= seconds < 1e6:
            return
        key = (rows, threads)
        count = self._counts.get(key, 0)
        old = self._seconds.get(key, seconds)
        self._seconds[key] = seconds if not count else (1 - _WEIGHT) * old + _WEIGHT * seconds
        self._counts[key] = count + 1
