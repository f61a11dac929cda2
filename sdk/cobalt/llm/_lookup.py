"""Speculation with no second model: proposals looked up in the sequence itself.

When the text being written repeats text already in the prompt or output
(code edits, extraction, answers quoting a document, lists), the tokens that
followed the last occurrence of the current tail are a good guess for what
comes next. :class:`NgramIndex` finds that occurrence in constant time per
token, and the target model checks all proposals in one pass, exactly as it
checks a draft model's (:mod:`cobalt.llm._speculative`).

Whether a step speculates is decided online, by :class:`Gate`: each request
keeps its own acceptance rate, and the engine keeps the measured cost of a
verifying pass relative to a plain one. A step speculates only when the
tokens it is expected to yield per second beat a plain step's, so free
writing, where lookups rarely match, runs as plain decoding.

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


@dataclass
class RowStats:
    """One request's record of its proposals."""

    rate: float = 0.5
    """Exponentially weighted fraction of proposed tokens accepted."""

    tried: bool = False
    """Whether this request has had proposals verified yet."""

    idle: int = 0
    """Steps since this request last had proposals verified."""

    def expected(self, proposals: int) -> float:
        """Tokens a step is expected to yield with this many proposals (1 without any)."""
        return 1.0 + sum(self.rate**j for j in range(1, proposals + 1))

    def record(self, proposed: int, accepted: int) -> None:
        if not proposed:
            self.idle += 1
            return
        self.rate = 0.7 * self.rate + 0.3 * (accepted / proposed)
        self.tried, self.idle = True, 0


_PROBE_EVERY = 16
"""Steps after which a request whose proposals stopped paying has them checked again."""

_FIRST_RATIO = 1.5
"""The verifying pass's cost over a plain step's assumed until one is measured."""


@dataclass
class Gate:
    """Decides, step by step, which rows propose and whether the step speculates.

    A step speculates when the tokens it is expected to yield, over the
    measured cost of the wider pass, beat a plain step's one token per row.
    A request's first proposals, and a failing request's every
    :data:`_PROBE_EVERY` steps, are checked regardless, so each request's
    acceptance is measured rather than assumed; that costs at most one
    wider pass in :data:`_PROBE_EVERY` steps.
    """

    plain_s: dict[int, float] = field(default_factory=dict)
    """Seconds per plain step, by batch size."""

    ratios: dict[int, float] = field(default_factory=dict)
    """A verifying pass's time over a plain step's, by batch size (measured)."""

    def choose(self, stats: list[RowStats], proposals: list[list[int]]) -> list[list[int]]:
        """The proposals to verify this step: none where speculation is not expected to pay."""
        chosen: list[list[int]] = []
        probing = False
        for row, offered in zip(stats, proposals, strict=True):
            due = bool(offered) and (not row.tried or row.idle >= _PROBE_EVERY)
            probing = probing or due
            chosen.append(offered if offered and (row.rate >= 0.2 or due) else [])
        gain = sum(row.expected(len(p)) for row, p in zip(stats, chosen, strict=True))
        if not any(chosen) or (
            not probing and gain / self.ratios.get(len(stats), _FIRST_RATIO) <= len(stats)
        ):
            for row in stats:
                row.idle += 1
            return [[] for _ in chosen]
        return chosen

    def timed_plain(self, rows: int, seconds: float) -> None:
        self.plain_s[rows] = _blend(self.plain_s.get(rows), seconds)

    def timed_verify(self, rows: int, seconds: float) -> None:
        plain = self.plain_s.get(rows)
        if plain:
            self.ratios[rows] = _blend(self.ratios.get(rows), seconds / plain)


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
    feed = torch.cat([next_tokens[:, None], proposed.clamp(min=0)], dim=1)
    mask, positions = kv.step_inputs(width)
    logits = target(
        input_ids=feed,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=kv.cache,
        use_cache=True,
    ).logits
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
