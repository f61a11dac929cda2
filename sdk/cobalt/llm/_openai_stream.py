"""Streamed answers of the OpenAI routes: server-sent events as OpenAI's clients read them.

Each chunk is one event ``data: {json}\\n\\n``, and ``data: [DONE]\\n\\n`` ends
the stream. A stream is handed to the replica only once its first event is
there (:func:`primed`), so that a request the engine refuses at once (a
prompt that is too long...) still gets an error status. A failure later is
sent as the event ``data: {"error": {...}}`` before ``[DONE]``, which the
``openai`` client raises as :class:`openai.APIError`.

Example:
    >>> event({"choices": []})
    b'data: {"choices":[]}\\n\\n'
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic_core import to_jsonable_python

from cobalt._runtime.raw import RawResponse
from cobalt.llm._openai_schema import OpenAIError, usage
from cobalt.llm._types import Chunk, Prompt, SamplingParams

DONE = b"data: [DONE]\n\n"


def event(value: Any) -> bytes:
    """One server-sent event carrying ``value`` as compact JSON."""
    data = json.dumps(value, separators=(",", ":"), default=to_jsonable_python)
    return b"data: " + data.encode() + b"\n\n"


@contextlib.asynccontextmanager
async def closing(chunks: AsyncIterator[Chunk]) -> AsyncGenerator[AsyncIterator[Chunk], None]:
    """Closes the engine's stream when the answer ends early (the client went away)."""
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


def finish_reason(reason: str | None, tokens: int, params: SamplingParams) -> str:
    """The engine's reason, or what the token count says when it gave none."""
    if reason is not None:
        return reason
    return "length" if tokens >= params.max_tokens else "stop"


async def generate(engine: Any, prompt: Prompt, params: SamplingParams) -> tuple[str, int, str]:
    """The whole generation: its text, its token count and why it ended."""
    texts: list[str] = []
    tokens, reason = 0, None
    async with closing(engine.astream(prompt, params)) as chunks:
        async for piece in chunks:
            texts.append(piece.text)
            tokens += len(piece.token_ids)
            reason = piece.finish_reason or reason
    return "".join(texts), tokens, finish_reason(reason, tokens, params)


async def primed(events: AsyncGenerator[bytes, None]) -> RawResponse:
    """A stream answer, once its first event is there; an error before it is raised."""
    first = await anext(events)
    return RawResponse.events(_Events(first, events))


class _Events:
    """``first``, then the rest of ``events``; closing it closes ``events`` (and so the
    engine's stream), even when it was never iterated."""

    def __init__(self, first: bytes, events: AsyncGenerator[bytes, None]) -> None:
        self._first: bytes | None = first
        self._events = events

    def __aiter__(self) -> _Events:
        return self

    async def __anext__(self) -> bytes:
        first, self._first = self._first, None
        if first is not None:
            return first
        return await anext(self._events)

    async def aclose(self) -> None:
        await self._events.aclose()


@dataclass(frozen=True, slots=True)
class Stream:
    """One streamed answer: what every chunk repeats, and how to count and fail.

    Attributes:
        engine: the model generating.
        head: ``id``, ``object``, ``created``, ``model`` as each chunk carries them.
        count: the token count of a prompt.
        fail: the OpenAI error for an exception (logged when unexpected).
        include_usage: ``stream_options.include_usage``: a last chunk with the usage.
    """

    engine: Any
    head: dict[str, Any]
    count: Callable[[Prompt], int]
    fail: Callable[[Exception], OpenAIError]
    include_usage: bool

    def chunk(self, choice: dict[str, Any]) -> bytes:
        extra = {"usage": None} if self.include_usage else {}
        return event({**self.head, "choices": [choice], **extra})

    def usage(self, prompt_tokens: int, completion_tokens: int) -> bytes:
        return event({**self.head, "choices": [], "usage": usage(prompt_tokens, completion_tokens)})


async def completion_events(
    stream: Stream, prompts: Sequence[Prompt], params: SamplingParams
) -> AsyncGenerator[bytes, None]:
    """``text_completion`` chunks, one prompt after the other (``index`` tells them apart)."""
    started = False
    prompt_tokens = completion_tokens = 0

    def chunk(index: int, text: str, finish: str | None) -> bytes:
        return stream.chunk(
            {"index": index, "text": text, "logprobs": None, "finish_reason": finish}
        )

    try:
        for index, prompt in enumerate(prompts):
            prompt_tokens += stream.count(prompt)
            tokens, reason = 0, None
            async with closing(stream.engine.astream(prompt, params)) as chunks:
                async for piece in chunks:
                    tokens += len(piece.token_ids)
                    reason = piece.finish_reason or reason
                    if piece.text:
                        started = True
                        yield chunk(index, piece.text, None)
            completion_tokens += tokens
            started = True
            yield chunk(index, "", finish_reason(reason, tokens, params))
        if stream.include_usage:
            yield stream.usage(prompt_tokens, completion_tokens)
    except Exception as exc:
        if not started:
            raise
        yield event(stream.fail(exc).body())
    yield DONE


async def chat_events(
    stream: Stream, prompt: str, params: SamplingParams
) -> AsyncGenerator[bytes, None]:
    """``chat.completion.chunk`` chunks: the role first, then text deltas, then the finish."""
    started = False
    tokens, reason = 0, None

    def chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        return stream.chunk({"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish})

    role = {"role": "assistant", "content": ""}
    try:
        async with closing(stream.engine.astream(prompt, params)) as chunks:
            async for piece in chunks:
                if not started:
                    started = True
                    yield chunk(role, None)
                tokens += len(piece.token_ids)
                reason = piece.finish_reason or reason
                if piece.text:
                    yield chunk({"content": piece.text}, None)
        if not started:
            started = True
            yield chunk(role, None)
        yield chunk({}, finish_reason(reason, tokens, params))
        if stream.include_usage:
            yield stream.usage(stream.count(prompt), tokens)
    except Exception as exc:
        if not started:
            raise
        yield event(stream.fail(exc).body())
    yield DONE
