"""Speculation with no second model: proposals looked up in the sequence itself.

When the text being written repeats text already in the prompt or output
(code edits, extraction, answers quoting a document, lists), the tokens that
followed the last occurrence of the current tail are a good guess for what
comes next. :class:`NgramIndex` finds that occurrence in constant time per
token, and the target model checks all proposals in one pass, exactly as it
checks a draft model's (:mod:`cobalt.llm._speculative`).

Whether a step speculates, and with how many proposals, is decided online
by :class:`Gate`: each request keeps its own acceptance rate, and the engine
measures what a wider pass costs. A step speculates only when the tokens it
is expected to yield per second beat a plain step's, so free writing, where
lookups rarely match, runs as plain decoding.

Example:
    >>> index = NgramIndex()
    >>> index.extend([1, 2, 3, 4, 1, 2])
    >>> index.propose(3)
    [3, 4, 1]
    >>> index.propose(6)
    [3, 4, 1, 2, 3, 4]
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from dataclasses import dataclass, field
from typing import Any

import torch

from cobalt.llm._kv import BatchKV
from cobalt.llm._sampling import draw, probabilities
from cobalt.llm._sequence import Sequence
from cobalt.llm._speculative import verify
from cobalt.llm._stats import Stats

MAX_NGRAM = 3
"""Longest tail looked up; a longer match is tried before a shorter one."""


@dataclass
class NgramIndex:
    """Where each recent n-gram of a token list last continued."""

    tokens: list[int] = field(default_factory=list)
    _after: list[dict[tuple[int, ...], int]] = field(
        default_factory=lambda: [{} for _ in range(MAX_NGRAM)]
    )

    def extend(self, tokens: list[int]) -> None:
        for token in tokens:
            end = len(self.tokens)
            for n in range(1, MAX_NGRAM + 1):
                if end >= n:  # the n-gram ending just before ``token`` continues with it
                    self._after[n - 1][tuple(self.tokens[end - n : end])] = end
            self.tokens.append(token)

    def propose(self, k: int) -> list[int]:
        """``k`` tokens that followed the latest earlier occurrence of the tail.

        When that continuation runs into the tail itself, the text is
        periodic there, and the proposals repeat its period.
        """
        end = len(self.tokens)
        for n in range(MAX_NGRAM, 0, -1):
            if end < n:
                continue
            start = self._after[n - 1].get(tuple(self.tokens[end - n :]))
            if start is not None:
                period = end - start
                proposals: list[int] = []
                for j in range(k):
                    at = start + j
                    proposals.append(self.tokens[at] if at < end else proposals[j - period])
                return proposals
        return []


_FIRST_PROBE = 8
"""Plain steps before a request whose proposals are not paying has one checked again."""

_LAST_PROBE = 128
"""The longest that wait grows to, doubling after each probe that keeps nothing."""


@dataclass
class RowStats:
    """One request's record of its proposals."""

    rate: float = 0.5
    """Exponentially weighted fraction of proposed tokens accepted."""

    idle: int = 0
    """Steps since this request last had proposals verified."""

    probe_every: int = _FIRST_PROBE
    """Steps after which its proposals are checked even when not expected to pay."""

    def expected(self, proposals: int) -> float:
        """Tokens a step is expected to yield with this many proposals (1 without any)."""
        return 1.0 + sum(self.rate**j for j in range(1, proposals + 1))

    def record(self, proposed: int, accepted: int) -> None:
        if not proposed:
            self.idle += 1
            return
        self.rate = 0.7 * self.rate + 0.3 * (accepted / proposed)
        self.idle = 0
        self.probe_every = _FIRST_PROBE if accepted else min(2 * self.probe_every, _LAST_PROBE)

    @property
    def due(self) -> bool:
        return self.idle >= self.probe_every


_FIRST_SLOPE = 0.25
"""Extra cost of each verified column, over a plain step's, assumed until measured."""

_MARGIN = 1.05
"""Expected speed over plain decoding a step must promise to speculate (noise aside)."""


@dataclass
class Gate:
    """Decides, step by step, how many proposals each row has verified, if any.

    The cost of a verifying pass is measured online, per batch size, as a
    plain step's time plus a slope per extra column; each request keeps its
    own acceptance rate, starting from what requests have seen so far. A
    step verifies ``n`` proposals per row for the ``n`` that maximizes
    expected tokens per unit of time, and only when that beats a plain step
    by :data:`_MARGIN`. A request that is not expected to pay has a single
    proposal checked now and then (a two-column pass, after a wait that
    doubles while nothing is kept), so its rate follows its text.
    """

    plain_s: dict[int, float] = field(default_factory=dict)
    """Seconds per plain step, by batch size."""

    slopes: dict[int, float] = field(default_factory=dict)
    """Each extra column's cost over a plain step's, by batch size (measured)."""

    prior: float = 0.5
    """Acceptance across all requests so far: a new request's starting rate."""

    def new_row(self) -> RowStats:
        return RowStats(rate=self.prior)

    def choose(self, stats: list[RowStats], proposals: list[list[int]]) -> list[list[int]]:
        """The proposals to verify this step: none where speculation is not expected to pay."""
        rows = len(stats)
        slope = self.slopes.get(rows, _FIRST_SLOPE)
        widest = max((len(p) for p in proposals), default=0)
        best, best_value = 0, _MARGIN
        for n in range(1, widest + 1):
            tokens = sum(
                row.expected(min(n, len(p))) for row, p in zip(stats, proposals, strict=True)
            )
            value = tokens / (rows * (1 + slope * n))
            if value > best_value:
                best, best_value = n, value
        if best:
            return [p[:best] for p in proposals]
        probes = [p[:1] if p and row.due else [] for row, p in zip(stats, proposals, strict=True)]
        if not any(probes):
            for row in stats:
                row.idle += 1
        return probes

    def timed_plain(self, rows: int, seconds: float) -> None:
        self.plain_s[rows] = _blend(self.plain_s.get(rows), seconds)

    def timed_verify(self, rows: int, width: int, seconds: float) -> None:
        plain = self.plain_s.get(rows)
        if plain and width > 1:
            slope = max(0.0, (seconds / plain - 1) / (width - 1))
            self.slopes[rows] = _blend(self.slopes.get(rows), slope)

    def observed(self, proposed: int, accepted: int) -> None:
        if proposed:
            self.prior = 0.9 * self.prior + 0.1 * (accepted / proposed)


def _blend(old: float | None, new: float) -> float:
    return new if old is None else 0.8 * old + 0.2 * new


def lookup_step(
    target: Any,
    kv: BatchKV,
    next_tokens: torch.Tensor,
    sequences: Seq[Sequence],
    proposals: list[list[int]],
    stats: Stats,
) -> tuple[list[list[int]], torch.Tensor, list[int]]:
    """Verify each row's proposals in one pass of the target.

    Returns the tokens each row emits, each row's next input token, and how
    many proposals each row kept. A row with fewer proposals than the widest
    is padded with masked columns; a row with none takes a plain step.
    Greedy rows keep a proposal exactly when it is the target's argmax, so
    their output is token for token plain decoding's; sampled rows keep one
    with the target's probability of it and otherwise draw from the rest,
    which leaves their distribution the target's (a lookup proposes with
    probability one).
    """
    rows = len(sequences)
    width = 1 + max(len(p) for p in proposals)
    proposed = torch.full((rows, width - 1), -1, dtype=torch.long, device=next_tokens.device)
    for r, offered in enumerate(proposals):
        if offered:
            proposed[r, : len(offered)] = torch.tensor(offered, device=next_tokens.device)
    logits = verify(target, kv, torch.cat([next_tokens[:, None], proposed.clamp(min=0)], dim=1))
    best = logits.argmax(dim=-1)
    accepted = (best[:, : width - 1] == proposed).long().cumprod(dim=1).sum(dim=1)
    bonus = best.gather(1, accepted[:, None])[:, 0]
    for r, sequence in enumerate(sequences):
        if not sequence.params.greedy:
            accepted[r], bonus[r] = _sampled(logits[r], proposals[r], sequence)
    kv.appended(width, accepted + 1)
    counts = accepted.tolist()
    stats.speculated(sum(len(p) for p in proposals), sum(counts))
    bonuses = bonus.tolist()
    emitted = [[*proposals[r][: counts[r]], bonuses[r]] for r in range(rows)]
    return emitted, bonus, counts


def _sampled(logits: torch.Tensor, offered: list[int], sequence: Sequence) -> tuple[int, int]:
    """Accepted count and next token for one sampled row."""
    probs = probabilities(logits[: len(offered) + 1], [sequence.params] * (len(offered) + 1))
    for j, token in enumerate(offered):
        if float(torch.rand(1, generator=sequence.generator)) < float(probs[j, token]):
            continue
        rest = probs[j].clone()
        rest[token] = 0.0
        total = float(rest.sum())
        return j, draw(rest / total if total > 0 else probs[j], sequence.generator)
    return len(offered), draw(probs[len(offered)], sequence.generator)
