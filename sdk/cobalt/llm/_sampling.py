"""Turning logits into tokens: greedy, temperature and nucleus (top-p) sampling.

Every row of a batch has its own settings and its own random generator, so a
request with a ``seed`` draws the same tokens whichever batch it runs in.

Example:
    >>> import torch
    >>> from cobalt.llm._types import SamplingParams
    >>> logits = torch.tensor([[0.0, 3.0, 1.0], [2.0, 0.0, 0.0]])
    >>> greedy = SamplingParams(temperature=0.0)
    >>> pick(logits, [greedy, greedy], [None, None]).tolist()
    [1, 0]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from cobalt.llm._types import SamplingParams


def probabilities(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """Each row's distribution after temperature and top-p; one-hot for greedy rows."""
    logits = logits.float()
    out = torch.empty_like(logits)
    for row, p in enumerate(params):
        if p.greedy:
            out[row].zero_()
            out[row, int(logits[row].argmax())] = 1.0
            continue
        probs = torch.softmax(logits[row] / p.temperature, dim=-1)
        if p.top_p < 1.0:
            probs = _nucleus(probs, p.top_p)
        out[row] = probs
    return out


def _nucleus(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest set of likeliest tokens whose mass reaches ``top_p``."""
    sorted_probs, order = probs.sort(descending=True)
    before = sorted_probs.cumsum(0) - sorted_probs
    sorted_probs[before >= top_p] = 0.0
    kept = torch.zeros_like(probs).scatter_(0, order, sorted_probs)
    return kept / kept.sum()


def draw(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from a distribution (its argmax when it is one-hot)."""
    return int(torch.multinomial(probs, 1, generator=generator))


def pick(
    logits: torch.Tensor,
    params: Sequence[SamplingParams],
    generators: Sequence[torch.Generator | None],
) -> torch.Tensor:
    """One token per row of ``logits`` ``[rows, vocab]``."""
    if all(p.greedy for p in params):
        return logits.argmax(dim=-1)
    probs = probabilities(logits, params)
    tokens = probs.argmax(dim=-1)
    for row, p in enumerate(params):
        if not p.greedy:
            tokens[row] = draw(probs[row], generators[row])
    return tokens
