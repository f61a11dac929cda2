"""Answers the OpenAI-compatible routes for one engine, inside a replica.

Each route reads its body (:mod:`._openai_schema`), checks the model name
and the settings, and then either collects the whole generation into one
JSON answer, or streams it as server-sent events (:mod:`._openai_stream`).
Errors are answered in OpenAI's shape: a 400 naming the field at fault, a
404 for another model's name, a 500 whose error id is in the replica's log.

Example:
    >>> import asyncio, json
    >>> from cobalt._runtime.raw import RawRequest
    >>> class Echo:
    ...     name = "echo"
    ...     async def aembed(self, texts):
    ...         return [[float(len(t))] for t in texts]
    ...     def count_tokens(self, text):
    ...         return len(text.split())
    >>> server = OpenAIServer(Echo(), "echo")
    >>> body = b'{"model": "echo", "input": ["a b", "c"]}'
    >>> answer = asyncio.run(server.embeddings(RawRequest("POST", "/v1/embeddings", body)))
    >>> [d["embedding"] for d in json.loads(answer.body)["data"]]
    [[3.0], [1.0]]
"""

from __future__ import annotations

import asyncio
import functools
import secrets
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from cobalt._runtime.raw import RawRequest, RawResponse
from cobalt.llm._openai_schema import (
    DEFAULT_CHAT_TOKENS,
    DEFAULT_COMPLETION_TOKENS,
    ChatMessage,
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    OpenAIError,
    encode_embedding,
    parse,
    refuse_unsupported,
    usage,
)
from cobalt.llm._openai_stream import Stream, chat_events, completion_events, generate, primed
from cobalt.llm._types import Prompt, SamplingParams
from cobalt_common.errors import SpecError

_SAMPLING = ("max_tokens", "temperature", "top_p", "stop", "seed")
_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class OpenAIServer:
    """The OpenAI routes of one engine (a :class:`~cobalt.llm.TextModel`, an
    :class:`~cobalt.llm.EmbeddingModel`, or one object that is both).

    Args:
        engine: the model; what it can do is read from its methods.
        model: the name clients send as ``model`` (and ``GET /v1/models`` lists).
    """

    def __init__(self, engine: Any, model: str) -> None:
        self.engine = engine
        self.model = model
        self.created = int(time.time())
        self.generates = callable(getattr(engine, "astream", None))
        self.chats = self.generates and callable(getattr(engine, "chat_prompt", None))
        self.embeds = callable(getattr(engine, "aembed", None)) or callable(
            getattr(engine, "embed", None)
        )
        adapters = getattr(engine, "adapters", ()) if self.generates else ()
        self.adapters: tuple[str, ...] = tuple(a for a in adapters if isinstance(a, str))

    # -- routes --------------------------------------------------------------------------

    async def models(self, request: RawRequest) -> RawResponse:
        card = {"id": self.model, "object": "model", "created": self.created, "owned_by": "cobalt"}
        cards = [card] + [{**card, "id": name, "parent": self.model} for name in self.adapters]
        return RawResponse.json({"object": "list", "data": cards})

    async def completions(self, request: RawRequest) -> RawResponse:
        return await self._guard(request, lambda: self._completions(request))

    async def chat(self, request: RawRequest) -> RawResponse:
        return await self._guard(request, lambda: self._chat(request))

    async def embeddings(self, request: RawRequest) -> RawResponse:
        return await self._guard(request, lambda: self._embeddings(request))

    # -- each route's work ---------------------------------------------------------------

    async def _completions(self, request: RawRequest) -> RawResponse:
        body = parse(CompletionRequest, request.body)
        engine, name = self._check(body.model, "/v1/completions", self.generates, "generate text")
        refuse_unsupported(body)
        params = _sampling(body, body.max_tokens, DEFAULT_COMPLETION_TOKENS)
        prompts = _prompts(body.prompt)
        ident, created = "cmpl-" + secrets.token_hex(12), int(time.time())
        head = self._head(ident, "text_completion", created, name)
        if body.stream:
            stream = self._stream(request, engine, head, body.include_usage)
            return await primed(completion_events(stream, prompts, params))
        done = await asyncio.gather(*(generate(engine, p, params) for p in prompts))
        choices = [
            {"index": i, "text": text, "logprobs": None, "finish_reason": finish}
            for i, (text, _, finish) in enumerate(done)
        ]
        prompt_tokens = sum(self._count(p) for p in prompts)
        answer = head
        answer["choices"] = choices
        answer["usage"] = usage(prompt_tokens, sum(n for _, n, _ in done))
        return RawResponse.json(answer)

    async def _chat(self, request: RawRequest) -> RawResponse:
        body = parse(ChatRequest, request.body)
        engine, name = self._check(body.model, "/v1/chat/completions", self.chats, "chat")
        refuse_unsupported(body)
        limit = body.max_completion_tokens if body.max_tokens is None else body.max_tokens
        params = _sampling(body, limit, DEFAULT_CHAT_TOKENS)
        prompt = self.engine.chat_prompt(_messages(body.messages))
        ident, created = "chatcmpl-" + secrets.token_hex(12), int(time.time())
        if body.stream:
            head = self._head(ident, "chat.completion.chunk", created, name)
            stream = self._stream(request, engine, head, body.include_usage)
            return await primed(chat_events(stream, prompt, params))
        text, tokens, finish = await generate(engine, prompt, params)
        answer = self._head(ident, "chat.completion", created, name)
        message = {"role": "assistant", "content": text}
        answer["choices"] = [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish}
        ]
        answer["usage"] = usage(self._count(prompt), tokens)
        return RawResponse.json(answer)

    async def _embeddings(self, request: RawRequest) -> RawResponse:
        body = parse(EmbeddingRequest, request.body)
        self._check(body.model, "/v1/embeddings", self.embeds, "embed text")
        if body.model in self.adapters:
            raise OpenAIError(
                404,
                f"{body.model!r} is a LoRA adapter, which serves text generation only; ask "
                f"for embeddings from {self.model!r}.",
                param="model",
                code="model_not_supported",
            )
        given = body.input
        texts = [given] if isinstance(given, str) else given
        if not texts:
            raise OpenAIError(
                400, "'input' is empty; send a string or a list of strings.", param="input"
            )
        if not all(isinstance(t, str) for t in texts):
            raise OpenAIError(
                400, "'input' as token ids is not supported; send the text.", param="input"
            )
        strings: list[str] = [t for t in texts if isinstance(t, str)]
        aembed = getattr(self.engine, "aembed", None)
        if callable(aembed):
            vectors = await aembed(strings)
        else:
            vectors = await asyncio.to_thread(self.engine.embed, strings)
        if body.dimensions is not None and vectors and len(vectors[0]) != body.dimensions:
            raise OpenAIError(
                400,
                f"dimensions={body.dimensions} is not supported: {self.model!r} makes vectors "
                f"of {len(vectors[0])} dimensions; leave dimensions out.",
                param="dimensions",
            )
        data = [
            {
                "object": "embedding",
                "index": i,
                "embedding": encode_embedding(v, body.encoding_format),
            }
            for i, v in enumerate(vectors)
        ]
        tokens = sum(self._count(t) for t in strings)
        answer: dict[str, Any] = {"object": "list", "data": data, "model": self.model}
        answer["usage"] = {"prompt_tokens": tokens, "total_tokens": tokens}
        return RawResponse.json(answer)

    # -- helpers -------------------------------------------------------------------------

    def _count(self, prompt: Prompt) -> int:
        if isinstance(prompt, str):
            return int(self.engine.count_tokens(prompt))
        return len(prompt)

    def _stream(
        self, request: RawRequest, engine: Any, head: dict[str, Any], include_usage: bool
    ) -> Stream:
        fail = functools.partial(self._error, request)
        return Stream(engine, head, self._count, fail, include_usage)

    def _head(self, ident: str, kind: str, created: int, model: str) -> dict[str, Any]:
        return {
            "id": ident,
            "object": kind,
            "created": created,
            "model": model,
            "system_fingerprint": None,
        }

    def _check(self, model: str | None, route: str, able: bool, what: str) -> tuple[Any, str]:
        """The engine that answers a request naming ``model`` (an adapter's view for an
        adapter's name), and the name answers carry."""
        if model is not None and model != self.model and model not in self.adapters:
            served = ", ".join(map(repr, (self.model, *self.adapters)))
            raise OpenAIError(
                404,
                f"model {model!r} is not served here; this deployment serves {served} "
                "(GET /v1/models lists them).",
                param="model",
                code="model_not_found",
            )
        if not able:
            routes = (
                ("/v1/completions", self.generates),
                ("/v1/chat/completions", self.chats),
                ("/v1/embeddings", self.embeds),
            )
            other = " and ".join(path for path, served in routes if served)
            raise OpenAIError(
                404,
                f"model {self.model!r} does not {what}, so it is not served at {route}; "
                f"it answers {other}.",
                param="model",
                code="model_not_supported",
            )
        if model is None or model == self.model:
            return self.engine, self.model
        return self.engine.with_adapter(model), model

    def _error(self, request: RawRequest, exc: Exception) -> OpenAIError:
        if isinstance(exc, OpenAIError):
            return exc
        if isinstance(exc, SpecError):
            first = str(exc).split(" ", 1)[0]
            return OpenAIError(400, str(exc), param=first if first in _SAMPLING else None)
        failure = request.failed(exc)
        return OpenAIError(
            500,
            f"{failure['error']} (error id {failure['error_id']}; the deployment's logs "
            "have its traceback).",
            type="server_error",
            code="internal_error",
        )

    async def _guard(
        self, request: RawRequest, work: Callable[[], Awaitable[RawResponse]]
    ) -> RawResponse:
        try:
            return await work()
        except Exception as exc:
            return self._error(request, exc).response()


def _sampling(
    body: CompletionRequest | ChatRequest, limit: int | None, default: int
) -> SamplingParams:
    return SamplingParams.checked(
        max_tokens=default if limit is None else limit,
        temperature=1.0 if body.temperature is None else body.temperature,
        top_p=1.0 if body.top_p is None else body.top_p,
        stop=body.stop,
        seed=body.seed,
    )


def _prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[Prompt]:
    if isinstance(prompt, str):
        return [prompt]
    if not prompt:
        raise OpenAIError(400, "'prompt' is empty; send a string.", param="prompt")
    if all(isinstance(p, int) for p in prompt):
        return [list(prompt)]  # type: ignore[arg-type]  # one prompt as token ids
    return list(prompt)  # type: ignore[arg-type]  # several prompts, text or token ids


def _messages(messages: Sequence[ChatMessage]) -> list[dict[str, Any]]:
    """Messages as the engine's chat template takes them: a role and a text content."""
    if not messages:
        raise OpenAIError(400, "'messages' is empty; send at least one message.", param="messages")
    plain = []
    for i, message in enumerate(messages):
        role = _ROLES.get(message.role)
        if role is None:
            raise OpenAIError(
                400,
                f"messages[{i}] has role {message.role!r}; this model server takes system, "
                "developer, user and assistant messages (no tool calling).",
                param=f"messages.{i}.role",
            )
        content = message.content
        if content is None:
            text = ""
        elif isinstance(content, str):
            text = content
        else:
            parts = []
            for part in content:
                if part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise OpenAIError(
                        400,
                        f"messages[{i}] has a content part of type {part.get('type')!r}; "
                        "only text parts are supported.",
                        param=f"messages.{i}.content",
                    )
                parts.append(part["text"])
            text = "\n".join(parts)
        plain.append({"role": role, "content": text})
    return plain
