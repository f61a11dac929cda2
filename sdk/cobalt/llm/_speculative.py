"""One speculative decoding step for a whole batch.

The draft model proposes ``k`` tokens per row, one cheap step at a time;
the target model scores all of them in one pass. Each row keeps the longest
run of proposals the target agrees with, plus one token of the target's
own, so a step yields between 1 and ``k + 1`` tokens per row.

Agreement follows speculative sampling (Leviathan et al., 2023): a proposal
``x`` is kept with probability ``min(1, p(x) / q(x))`` and a rejection
draws from ``max(0, p - q)``, which leaves the distribution of the output
exactly the target's. For greedy rows both distributions are one-hot, so a
proposal is kept exactly when it is the target's argmax, and the output is
token for token what greedy decoding without a draft gives.

Rejected proposals stay in both caches as masked columns
(:class:`cobalt.llm._kv.BatchKV`), so no row has to be copied. When a row
keeps all ``k`` proposals, the draft has not yet seen the last one; rather
than spend a draft pass on it, it is ``pending`` and goes in with the next
step's first draft pass, two tokens wide.
"""

from __future__ import annotations

from collections.abc import Sequence as Seq
from typing import Any

import torch

from cobalt.llm._kv import BatchKV
from cobalt.llm._sampling import draw, probabilities
from cobalt.llm._sequence import Sequence
from cobalt.llm._stats import Stats


def speculative_step(
    target: Any,
    draft: Any,
    kv: BatchKV,
    draft_kv: BatchKV,
    next_tokens: torch.Tensor,
    pending: torch.Tensor,
    sequences: Seq[Sequence],
    k: int,
    stats: Stats,
) -> tuple[list[list[int]], torch.Tensor, torch.Tensor]:
    """Tokens each row emits this step, each row's next input token, and its pending token
    (-1 for none): the last proposal when all were kept, which the draft has not seen."""
    rows = len(sequences)
    params = [s.params for s in sequences]
    generators = [s.generator for s in sequences]
    greedy = all(p.greedy for p in params)
    ones = torch.ones(rows, dtype=torch.long, device=next_tokens.device)
    proposals: list[torch.Tensor] = []
    draft_probs: list[torch.Tensor] = []
    token = next_tokens
    for j in range(k):
        if j == 0 and bool((pending >= 0).any()):
            logits = _draft_with_pending(draft, draft_kv, pending, next_tokens)
        else:
            mask, positions = draft_kv.step_inputs(1)
            logits = draft(
                input_ids=token[:, None],
                attention_mask=mask,
                position_ids=positions,
                past_key_values=draft_kv.cache,
                use_cache=True,
            ).logits[:, -1]
            draft_kv.appended(1, ones, compact=False)
        if greedy:
            token = logits.argmax(dim=-1)
        else:
            probs = probabilities(logits, params)
            draft_probs.append(probs)
            token = torch.tensor(
                [draw(probs[r], generators[r]) for r in range(rows)], device=token.device
            )
        proposals.append(token)
    proposed = torch.stack(proposals, dim=1)
    logits = verify(target, kv, torch.cat([next_tokens[:, None], proposed], dim=1))
    if greedy:
        best = logits.argmax(dim=-1)
        accepted = (best[:, :k] == proposed).long().cumprod(dim=1).sum(dim=1)
        bonus = best.gather(1, accepted[:, None])[:, 0]
    else:
        accepted, bonus = _verify_sampled(logits, proposed, draft_probs, sequences)
    valid = accepted + 1
    kv.appended(k + 1, valid)
    draft_kv.settle(k, valid.clamp(max=k))
    pending = torch.where(accepted == k, proposed[:, -1], torch.full_like(accepted, -1))
    stats.speculated(rows * k, int(accepted.sum()))
    listed = proposed.tolist()
    counts = accepted.tolist()
    bonuses = bonus.tolist()
    emitted = [[*listed[r][: counts[r]], bonuses[r]] for r in range(rows)]
    return emitted, bonus, pending


def verify(target: Any, kv: BatchKV, feed: torch.Tensor) -> torch.Tensor:
    """The target's logits for ``feed`` (each row's next token, then its proposals), in one
    pass that appends them all to the cache."""
    mask, positions = kv.step_inputs(int(feed.shape[1]))
    return target(  # type: ignore[no-any-return]
        input_ids=feed,
        attention_mask=mask,
        position_ids=positions,
        past_key_values=kv.cache,
        use_cache=True,
    ).logits


def _draft_with_pending(
    draft: Any, draft_kv: BatchKV, pending: torch.Tensor, next_tokens: torch.Tensor
) -> torch.Tensor:
    """The first draft pass when some rows owe the draft a token: feed [pending, next].

    Rows with nothing pending get a masked filler in the first column, so
    every row's ``next`` token lands at its own position.
    """
    has = (pending >= 0).long()
    feed = torch.stack([torch.where(has.bool(), pending, next_tokens), next_tokens], dim=1)
    columns = torch.stack([has, torch.ones_like(has)], dim=1)
    positions = torch.stack([draft_kv.lengths, draft_kv.lengths + has], dim=1)
    logits = draft(
        input_ids=feed,
        attention_mask=torch.cat([draft_kv.mask, columns], dim=1),
        position_ids=positions,
        past_key_values=draft_kv.cache,
        use_cache=True,
    ).logits[:, -1]
    draft_kv.append_masked(columns)
    return logits  # type: ignore[no-any-return]


def _verify_sampled(
    logits: torch.Tensor,
    proposed: torch.Tensor,
    draft_probs: list[torch.Tensor],
    sequences: Seq[Sequence],
) -> tuple[torch.Tensor, torch.Tensor]:
    """Accepted counts and next tokens by speculative sampling, row by row."""
    rows, width = proposed.shape
    accepted = torch.zeros(rows, dtype=torch.long, device=proposed.device)
    bonus = torch.zeros(rows, dtype=torch.long, device=proposed.device)
    for r, sequence in enumerate(sequences):
        p = probabilities(logits[r], [sequence.params] * (width + 1))
        generator = sequence.generator
        chosen: int | None = None
        n = 0
        for j in range(width):
            x = int(proposed[r, j])
            q = draft_probs[j][r]
            if sequence.params.greedy:
                keep = int(p[j].argmax()) == x
            else:
                ratio = float(p[j, x]) / max(float(q[x]), 1e-20)
                keep = float(torch.rand(1, generator=generator)) < ratio
            if keep:
                n += 1
                continue
            residual = (p[j] - q).clamp(min=0.0)
            total = float(residual.sum())
            chosen = draw(residual / total if total > 0 else p[j], generator)
            break
        if chosen is None:
            chosen = draw(p[width], generator)
        accepted[r], bonus[r] = n, chosen
    return accepted, bonus
