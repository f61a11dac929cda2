"""A long prompt arriving while others decode is prefilled a chunk per step, between their
steps, and gives exactly what an unchunked prefill gives."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cobalt as ct  # noqa: E402
from cobalt.llm._sequence import Sequence  # noqa: E402
from cobalt.llm._types import Chunk, Completion, SamplingParams  # noqa: E402

pytestmark = pytest.mark.unit

LONG = list(range(10, 70))  # 60 prompt tokens: 8 chunks of 8


def _sequence(engine: Any, prompt: list[int], tokens: int, name: str, events: list) -> Sequence:
    """A request whose chunks are recorded, in the engine thread's order, as (name, item)."""
    params = SamplingParams.checked(max_tokens=tokens, temperature=0)
    return Sequence.new(
        prompt,
        params,
        lambda item: events.append((name, item)),
        engine.tokenizer,
        frozenset(),  # never stops early: the running stream outlasts the long prefill
        engine.max_length,
    )


def _start(engine: Any, running: Sequence) -> None:
    """Submit ``running`` and wait until it decodes, so later prompts arrive mid-batch."""
    engine._runner.submit(running)
    deadline = time.monotonic() + 30
    while len(running.output_ids) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert len(running.output_ids) >= 2


def _interleaved(chunk: int) -> tuple[int, tuple[int, ...]]:
    """Tokens the running stream emitted while the long prompt was prefilled, and the long
    prompt's output."""
    model, tokenizer = ct.llm.random_model(seed=0)
    engine = ct.llm.Engine(model, tokenizer, prefix_cache=False, prefill_chunk_tokens=chunk)
    events: list[tuple[str, Chunk | Completion | BaseException]] = []
    try:
        running = _sequence(engine, [5, 6, 7], 200, "running", events)
        _start(engine, running)
        arrived = len(events)
        done = threading.Event()
        long = _sequence(engine, LONG, 6, "long", events)
        long.sink = lambda item: (events.append(("long", item)), done.set())
        engine._runner.submit(long)
        assert done.wait(30)
        first = next(i for i, (name, _) in enumerate(events) if name == "long")
        during = sum(1 for name, _ in events[arrived:first] if name == "running")
        while not isinstance(events[-1][1], Completion) or events[-1][0] != "long":
            time.sleep(0.001)
        return during, tuple(long.output_ids)
    finally:
        engine.close()


def test_a_long_prompt_is_prefilled_between_the_running_streams_steps() -> None:
    chunked_during, chunked = _interleaved(chunk=8)
    whole_during, whole = _interleaved(chunk=512)
    assert chunked == whole, "chunking changes when, never what"
    assert chunked_during >= 6, "about one running step per chunk of eight"
    assert whole_during <= 2, "unchunked, the long prefill holds the running stream up"


def test_a_chunked_prompt_reuses_the_prefix_cache_and_keeps_it_per_adapter() -> None:
    model, tokenizer = ct.llm.random_model(seed=0)
    engine = ct.llm.Engine(model, tokenizer, prefill_chunk_tokens=8)
    try:
        first = engine.generate(LONG, max_tokens=4, temperature=0)
        events: list[tuple[str, Any]] = []
        running = _sequence(engine, [5, 6, 7], 200, "running", events)
        _start(engine, running)
        again = engine.generate(LONG + [99] * 20, max_tokens=4, temperature=0)
        running.cancelled = True
    finally:
        engine.close()
    assert again.cached_prompt_tokens >= len(LONG) - 1
    assert len(running.output_ids) >= 3, "the rest (21 tokens) was prefilled in chunks of 8"
    alone = ct.llm.Engine(model, tokenizer, prefix_cache=False)
    try:
        assert (
            again.token_ids
            == alone.generate(LONG + [99] * 20, max_tokens=4, temperature=0).token_ids
        )
        assert first.token_ids == alone.generate(LONG, max_tokens=4, temperature=0).token_ids
    finally:
        alone.close()


def test_the_chunk_size_is_checked() -> None:
    model, tokenizer = ct.llm.random_model(seed=0)
    with pytest.raises(ct.SpecError, match="prefill_chunk_tokens must be a whole number"):
        ct.llm.Engine(model, tokenizer, prefill_chunk_tokens=0)
