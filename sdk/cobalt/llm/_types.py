"""The values the model stack hands to service code: sampling settings, streamed
chunks, finished completions, and what an engine must offer to be served.

Example:
    >>> params = SamplingParams.checked(max_tokens=8, temperature=0.0, stop=["\\n"])
    >>> params.greedy, params.stop
    (True, ('\\n',))
    >>> SamplingParams.checked(top_p=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    cobalt.SpecError: top_p must be in (0, 1], not 0; ...
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from cobalt_common.errors import SpecError

FinishReason = Literal["stop", "length"]
Prompt = str | Sequence[int]


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens.

    Attributes:
        max_tokens: most tokens to generate (the prompt not counted).
        temperature: 0 is greedy; higher spreads the choice.
        top_p: sample from the smallest set of tokens whose probability
            reaches ``top_p`` (1 turns this off).
        stop: strings that end the generation; the text stops before them.
        seed: makes sampling repeatable for this request.
    """

    max_tokens: int = 16
    temperature: float = 1.0
    top_p: float = 1.0
    stop: tuple[str, ...] = ()
    seed: int | None = None

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0

    @classmethod
    def checked(
        cls,
        *,
        max_tokens: int = 16,
        temperature: float = 1.0,
        top_p: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
    ) -> SamplingParams:
        """Settings checked one by one, with a :class:`~cobalt.SpecError` naming the bad one."""
        if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
            raise SpecError(f"max_tokens must be a whole number of at least 1, not {max_tokens!r}.")
        if (
            isinstance(temperature, bool)
            or not isinstance(temperature, int | float)
            or not math.isfinite(temperature)
            or temperature < 0
        ):
            raise SpecError(
                f"temperature must be a finite number of at least 0, not {temperature!r}; "
                "0 picks the likeliest token."
            )
        if isinstance(top_p, bool) or not isinstance(top_p, int | float) or not 0 < top_p <= 1:
            raise SpecError(
                f"top_p must be in (0, 1], not {top_p!r}; use 1 to turn nucleus sampling off."
            )
        stops: tuple[str, ...]
        if stop is None:
            stops = ()
        elif isinstance(stop, str):
            stops = (stop,)
        else:
            stops = tuple(stop)
        if any(not isinstance(s, str) or not s for s in stops):
            raise SpecError(f"stop must be a string or a list of non-empty strings, not {stop!r}.")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
            raise SpecError(f"seed must be a whole number or None, not {seed!r}.")
        return cls(max_tokens, float(temperature), float(top_p), stops, seed)


@dataclass(frozen=True)
class Chunk:
    """One piece of a streamed generation.

    ``text`` is the new text (it can be empty while a multi-byte character or
    a possible stop string is held back); ``finish_reason`` is set on the last.
    """

    text: str
    token_ids: tuple[int, ...]
    finish_reason: FinishReason | None = None


@dataclass(frozen=True)
class Completion:
    """A finished generation, with its token counts and timings (seconds)."""

    text: str
    token_ids: tuple[int, ...]
    prompt_tokens: int
    finish_reason: FinishReason
    time_to_first_token: float = 0.0
    duration: float = 0.0
    cached_prompt_tokens: int = 0

    @property
    def completion_tokens(self) -> int:
        return len(self.token_ids)


@runtime_checkable
class TextModel(Protocol):
    """What :func:`cobalt.llm.openai_routes` needs of a text generator."""

    name: str

    def stream(self, prompt: Prompt, params: SamplingParams) -> Iterator[Chunk]: ...

    def astream(self, prompt: Prompt, params: SamplingParams) -> AsyncIterator[Chunk]: ...

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> str: ...

    def count_tokens(self, text: str) -> int: ...

    def metrics(self) -> dict[str, Any]: ...


@runtime_checkable
class EmbeddingModel(Protocol):
    """What :func:`cobalt.llm.openai_routes` needs of an embedder."""

    name: str

    def embed(self, texts: Sequence[str]) -> list[list[float]]: ...

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]: ...

    def count_tokens(self, text: str) -> int: ...

    def metrics(self) -> dict[str, Any]: ...
