"""A causal LM's serving figures for ``ct.optimize``: prefill, decode step, agreement.

A model that generates text runs one forward pass per new token on the KV
cache of what came before; that decode step bounds its generation speed, and
a whole-prompt pass does not show it. Here both models run each prompt (a row
of an input, padding removed) at batch 1: a prefill with ``use_cache=True``,
then greedy decode steps, one token each. The figures are in
:class:`cobalt._optimize_report.CausalLMFigures`. Imported only when
optimizing, as :mod:`cobalt._optimize_torch`.
"""

from __future__ import annotations

import inspect
import math
import statistics
import time
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from cobalt import _optimize_torch as ot
from cobalt._optimize_report import CausalLMFigures
from cobalt_common.errors import SpecError

GREEDY_TOKENS = 16
"""Tokens each continued prompt is extended by: the prefill's, then one per decode step."""

MAX_CONTINUED = 16
"""Prompts continued greedily (the first ones); every prompt is prefilled."""

PREFILL_REPEATS = 3
"""Prefills of each prompt per pass, the fastest kept: a pass has one prefill per prompt
and many decode steps, so without these the prefill's median is over few timings."""

TOKEN_HINT = "pass the tokenizer's output, such as tokenizer(text, return_tensors='pt')"


def _ids_and_mask(item: Any) -> tuple[Any, Any]:
    """The ``input_ids`` and ``attention_mask`` of one input, as the model reads them."""
    if isinstance(item, torch.Tensor):
        return item, None
    if isinstance(item, tuple):
        return (item[0] if item else None), (item[1] if len(item) > 1 else None)
    return item.get("input_ids"), item.get("attention_mask")


def _vocabulary(model: nn.Module) -> int | None:
    get = getattr(model, "get_input_embeddings", None)
    size = getattr(get() if callable(get) else None, "num_embeddings", None)
    return size if isinstance(size, int) else None


def _check_ids(ids: Any, mask: Any, where: str, vocabulary: int | None) -> None:
    """Refuses input_ids a causal LM cannot read, saying how to make them."""
    if not isinstance(ids, torch.Tensor):
        raise SpecError(f"{where}: input_ids is a {type(ids).__name__}, not a tensor; {TOKEN_HINT}")
    if ids.is_floating_point() or ids.is_complex() or ids.dtype == torch.bool:
        raise SpecError(
            f"{where}: input_ids is a {str(ids.dtype).removeprefix('torch.')} tensor, and a "
            f"causal LM reads token ids, an integer tensor; {TOKEN_HINT}"
        )
    if ids.dim() != 2 or ids.shape[1] == 0:
        raise SpecError(
            f"{where}: input_ids has shape {tuple(ids.shape)}, and a causal LM takes "
            f"(batch, tokens) with at least one token; {TOKEN_HINT}"
        )
    if isinstance(mask, torch.Tensor) and mask.shape != ids.shape:
        raise SpecError(
            f"{where}: attention_mask has shape {tuple(mask.shape)}, input_ids "
            f"{tuple(ids.shape)}; they must match"
        )
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or (vocabulary is not None and high >= vocabulary):
        bad = low if low < 0 else high
        raise SpecError(
            f"{where}: token id {bad} is outside the model's vocabulary of {vocabulary} "
            "(0 to vocabulary - 1): tokenize the inputs with this model's tokenizer"
        )


def token_prompts(model: nn.Module, items: Sequence[Any], name: str) -> tuple[list[Any], str]:
    """Each row of each input as a ``(1, tokens)`` id tensor, its padding removed.

    Returns the prompts, or none and why the causal LM figures cannot be
    measured on these inputs (they have no ``input_ids``, such as
    ``inputs_embeds`` alone). Raises :class:`SpecError` for token ids the
    model cannot read.
    """
    vocabulary = _vocabulary(model)
    prompts: list[Any] = []
    for i, item in enumerate(items):
        ids, mask = _ids_and_mask(item)
        if ids is None:
            return [], (
                f"causal LM figures: {name}[{i}] has no input_ids, so prefill and decode-step "
                "latency and next-token agreement are not measured, and no latency is "
                f"reported (a whole-input pass is not generation speed); {TOKEN_HINT}"
            )
        _check_ids(ids, mask, f"{name}[{i}]", vocabulary)
        for row in range(ids.shape[0]):
            tokens = ids[row]
            if isinstance(mask, torch.Tensor):
                tokens = tokens[mask[row].bool()]
            if tokens.numel() == 0:
                raise SpecError(f"{name}[{i}] row {row}: its attention_mask is all 0 (no tokens)")
            prompts.append(tokens.reshape(1, -1))
    return prompts, ""


def cache_argument(model: nn.Module) -> str:
    """The forward argument the KV cache goes in: ``cache`` in newer transformers."""
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return "past_key_values"
    if "cache" in parameters and "past_key_values" not in parameters:
        return "cache"
    return "past_key_values"


class _NoCache(Exception):
    """The forward pass returned no KV cache with ``use_cache=True``."""


def _cache_of(output: Any) -> Any:
    for name in ("cache", "past_key_values"):
        value = output.get(name) if isinstance(output, Mapping) else getattr(output, name, None)
        if value is not None:
            return value
    raise _NoCache("it returned no KV cache with use_cache=True")


def _timed(model: nn.Module, ids: torch.Tensor, **kwargs: Any) -> tuple[float, torch.Tensor, Any]:
    """Seconds of one forward pass, its logits and its output."""
    start = time.perf_counter()
    output = model(input_ids=ids, use_cache=True, **kwargs)
    logits = output["logits"] if isinstance(output, Mapping) else output.logits
    if logits.is_cuda:
        torch.cuda.synchronize(logits.device)
    return time.perf_counter() - start, logits, output


def _why(exc: Exception) -> str:
    reason = (str(exc).strip().splitlines() or [""])[0][:200]
    return reason if isinstance(exc, _NoCache) else f"{type(exc).__name__}: {reason}"


class Decoder:
    """One model's prefills and greedy decode steps over the prompts, pass by pass.

    Each prefill and decode step keeps its fastest time over the passes (as
    :func:`cobalt._optimize_torch.run_all` does); the first pass gives the
    tokens. ``failure`` says what could not be measured, and why.
    """

    def __init__(self, model: nn.Module, prompts: Sequence[torch.Tensor], cache_arg: str) -> None:
        self.model, self.cache_arg = model, cache_arg
        device = ot.device_of(model)
        self.prompts = [p.to(device) for p in prompts]
        room = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.lengths = [
            min(GREEDY_TOKENS, room - p.shape[1]) if isinstance(room, int) else GREEDY_TOKENS
            for p in prompts[:MAX_CONTINUED]
        ]
        """How many tokens each continued prompt gets (fewer where its context is full)."""
        self.prefill = [math.inf] * len(prompts)
        self.steps: list[list[float]] = [[] for _ in self.lengths]
        self.next_tokens: list[torch.Tensor] = []
        """The argmax at every position of every prompt."""
        self.continuations: list[torch.Tensor] = []
        self.failure = ""
        self.prefill_failed = False
        self.passes = 0

    def _step(self, token: torch.Tensor, output: Any) -> tuple[float, torch.Tensor, Any]:
        """One decode step: ``token`` on ``output``'s KV cache."""
        return _timed(self.model, token, **{self.cache_arg: _cache_of(output)})

    def _greedy(self, logits: torch.Tensor, output: Any, length: int) -> tuple[list[float], Any]:
        """Continues a prefill greedily to ``length`` tokens: each step's seconds, the tokens."""
        token = logits[:, -1].argmax(dim=-1, keepdim=True)
        chosen, seconds = [token], []
        for _ in range(length - 1):
            took, logits, output = self._step(token, output)
            token = logits[:, -1].argmax(dim=-1, keepdim=True)
            chosen.append(token)
            seconds.append(took)
        return seconds, torch.cat(chosen, dim=1)[0].cpu()

    def warm_up(self) -> None:
        """One prefill and one decode step, untimed; records why either fails."""
        try:
            _, logits, output = _timed(self.model, self.prompts[0])
        except Exception as exc:
            self.failure = f"a prefill with use_cache=True failed ({_why(exc)})"
            self.prefill_failed = True
            return
        try:
            self._step(logits[:, -1].argmax(dim=-1, keepdim=True), output)
        except Exception as exc:
            self.failure = f"a one-token step on the prefill's KV cache failed ({_why(exc)})"

    def run_pass(self) -> None:
        """Prefills every prompt and continues the first :data:`MAX_CONTINUED` greedily."""
        if self.prefill_failed:
            return
        for i, prompt in enumerate(self.prompts):
            for _ in range(PREFILL_REPEATS):
                try:
                    took, logits, output = _timed(self.model, prompt)
                except Exception as exc:
                    self.failure = f"a prefill failed on prompt {i} ({_why(exc)})"
                    self.prefill_failed = True
                    return
                self.prefill[i] = min(self.prefill[i], took)
            if not self.passes:
                self.next_tokens.append(logits[0].argmax(dim=-1).cpu())
            if i >= len(self.lengths) or self.lengths[i] < 2 or self.failure:
                continue
            try:
                seconds, chosen = self._greedy(logits, output, self.lengths[i])
            except Exception as exc:
                self.failure = f"a decode step failed on prompt {i} ({_why(exc)})"
                continue
            if not self.passes:
                self.steps[i] = seconds
                self.continuations.append(chosen)
            else:
                self.steps[i] = [min(a, b) for a, b in zip(self.steps[i], seconds, strict=True)]
        self.passes += 1

    @property
    def prefill_ms(self) -> float | None:
        """Median milliseconds of a prefill; None if it failed."""
        if not self.passes or self.prefill_failed:
            return None
        return statistics.median(self.prefill) * 1000

    @property
    def decode_ms(self) -> float | None:
        """Median milliseconds of a decode step; None if one failed (or none ran)."""
        timed = [s for row in self.steps for s in row]
        return statistics.median(timed) * 1000 if timed and not self.failure else None

    @property
    def decode_steps(self) -> int:
        return sum(len(row) for row in self.steps) if self.decode_ms is not None else 0


def measure(decoders: Sequence[Decoder]) -> None:
    """Runs the decoders' passes in turn, so that a busy neighbour slows each alike.

    Up to :data:`cobalt._optimize_torch.MAX_PASSES` passes each, while under
    :data:`cobalt._optimize_torch.TIMED_BUDGET_S` per decoder in all.
    """
    with torch.inference_mode(), ot.quiet_deprecations():
        for decoder in decoders:
            decoder.warm_up()
        started = time.perf_counter()
        budget = ot.TIMED_BUDGET_S * len(decoders)
        for attempt in range(ot.MAX_PASSES):
            for decoder in decoders:
                decoder.run_pass()
            elapsed = time.perf_counter() - started
            if elapsed / (attempt + 1) * (attempt + 2) > budget:
                break  # one more pass would go over the budget


def _agreement(before: Decoder, after: Decoder) -> tuple[float | None, int]:
    """The fraction of prompt positions whose next token (argmax) is the original's."""
    pairs = list(zip(before.next_tokens, after.next_tokens, strict=True))
    positions = sum(a.numel() for a, _ in pairs)
    if not positions:
        return None, 0
    return sum(int((a == b).sum()) for a, b in pairs) / positions, positions


def _greedy_agreement(before: Decoder, after: Decoder) -> tuple[float | None, int, int]:
    """Tokens before each continuation's first difference, of all; total; identical ones."""
    matched = total = identical = 0
    for a, b in zip(before.continuations, after.continuations, strict=True):
        differs = (a != b).nonzero()
        prefix = int(differs[0, 0]) if len(differs) else len(a)
        matched, total, identical = matched + prefix, total + len(a), identical + (prefix == len(a))
    return (matched / total if total else None), total, identical


def compare(
    model: nn.Module, optimized: nn.Module, prompts: Sequence[torch.Tensor]
) -> tuple[CausalLMFigures, list[str]]:
    """Measures both models on the prompts; returns the figures and notes for ``skipped``."""
    cache_arg = cache_argument(model)
    before = Decoder(model, prompts, cache_arg)
    after = Decoder(optimized, prompts, cache_arg)
    with ot.eval_mode(model):
        measure([before, after])
    notes = [
        f"{'prefill and ' if run.prefill_failed else ''}decode step of the {who}: not "
        f"measured, {run.failure}; so no speedup is reported (a whole pass's speed is not "
        "generation speed)"
        for who, run in (("original model", before), ("optimized copy", after))
        if run.failure
    ]
    agreement, positions = (None, 0)
    if not before.prefill_failed and not after.prefill_failed:
        agreement, positions = _agreement(before, after)
    greedy, total, identical = (None, 0, 0)
    if before.decode_ms is not None and after.decode_ms is not None:
        greedy, total, identical = _greedy_agreement(before, after)
    count = len(before.continuations) if greedy is not None else 0
    figures = CausalLMFigures(
        prompts=len(prompts),
        prefill_ms_before=before.prefill_ms,
        prefill_ms_after=after.prefill_ms,
        positions=positions,
        next_token_agreement=agreement,
        decode_ms_before=before.decode_ms,
        decode_ms_after=after.decode_ms,
        decode_steps=min(before.decode_steps, after.decode_steps),
        greedy_prompts=count,
        greedy_tokens=total // count if count else 0,
        greedy_agreement=greedy,
        greedy_identical=identical,
    )
    return figures, notes
