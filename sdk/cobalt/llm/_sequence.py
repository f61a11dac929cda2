"""One request inside the engine: its prompt, settings, tokens so far and where its output goes.

The engine's thread fills a :class:`Sequence`; the caller's thread (or event
loop) reads what it sends through ``sink``. A caller that stops reading sets
``cancelled`` and the engine drops the row at its next step.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from cobalt.llm._text import TextStream
from cobalt.llm._types import Chunk, Completion, FinishReason, SamplingParams

Sink = Callable[[Chunk | Completion | BaseException], None]


@dataclass(eq=False)
class Sequence:
    """A generation in progress."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: Sink
    text: TextStream
    eos_ids: frozenset[int]
    max_length: int
    generator: torch.Generator | None = None
    output_ids: list[int] = field(default_factory=list)
    arrived: float = field(default_factory=time.perf_counter)
    first_token_at: float | None = None
    last_token_at: float | None = None
    cached_tokens: int = 0
    adapter: int = 0
    """The LoRA adapter the request asked for, counting from 1; 0 is the base model."""
    finish_reason: FinishReason | None = None
    cancelled: bool = False

    @classmethod
    def new(
        cls,
        prompt_ids: list[int],
        params: SamplingParams,
        sink: Sink,
        tokenizer: Any,
        eos_ids: frozenset[int],
        max_length: int,
        adapter: int = 0,
    ) -> Sequence:
        generator = None
        if not params.greedy:
            generator = torch.Generator()
            if params.seed is not None:
                generator.manual_seed(params.seed)
            else:
                generator.seed()
        return cls(
            prompt_ids=prompt_ids,
            params=params,
            sink=sink,
            text=TextStream(tokenizer, params.stop),
            eos_ids=eos_ids,
            max_length=max_length,
            generator=generator,
            adapter=adapter,
        )

    @property
    def done(self) -> bool:
        return self.finish_reason is not None or self.cancelled

    def add(self, tokens: list[int], now: float) -> list[float]:
        """Take newly generated tokens (stopping early if one ends the sequence) and send
        their text. Returns the gaps between tokens, for inter-token latency."""
        gaps: list[float] = []
        if self.done:
            return gaps
        previous = self.last_token_at
        if self.first_token_at is None:
            self.first_token_at = now
        taken: list[int] = []
        text = ""
        for token in tokens:
            if token in self.eos_ids:
                self.finish_reason = "stop"
                break
            taken.append(token)
            self.output_ids.append(token)
            text += self.text.push(token)
            if self.text.stopped:
                self.finish_reason = "stop"
                break
            if (
                len(self.output_ids) >= self.params.max_tokens
                or len(self.prompt_ids) + len(self.output_ids) >= self.max_length
            ):
                self.finish_reason = "length"
                break
        if self.finish_reason == "length" or (
            self.finish_reason == "stop" and not self.text.stopped
        ):
            text += self.text.finish()
        if previous is not None and taken:
            gaps = [(now - previous) / len(taken)] * len(taken)
        self.last_token_at = now
        if text or taken or self.finish_reason is not None:
            self.sink(Chunk(text, tuple(taken), self.finish_reason))
        return gaps

    def completion(self) -> Completion:
        assert self.finish_reason is not None
        first = self.first_token_at or time.perf_counter()
        return Completion(
            text=self.text.text,
            token_ids=tuple(self.output_ids),
            prompt_tokens=len(self.prompt_ids),
            finish_reason=self.finish_reason,
            time_to_first_token=first - self.arrived,
            duration=(self.last_token_at or first) - self.arrived,
            cached_prompt_tokens=self.cached_tokens,
        )
