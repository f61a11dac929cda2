"""The OpenAI wire format: request bodies, errors and answers, as :mod:`cobalt.llm` serves it.

Requests are read with pydantic models that keep fields they do not know
(clients add new ones all the time) and refuse, with a 400 that says why,
the known ones that would change what is generated and are not supported
(``n`` above 1, ``logprobs``, tools, penalties...). Answers are plain dicts
shaped as OpenAI's, so that its clients parse them unchanged.

Example:
    >>> body = parse(ChatRequest, b'{"messages": [{"role": "user", "content": "hi"}]}')
    >>> body.messages[0].content
    'hi'
    >>> try:
    ...     refuse_unsupported(parse(ChatRequest, b'{"messages": [], "n": 2}'))
    ... except OpenAIError as exc:
    ...     print(exc.status, exc.param, exc.message)
    400 n n=2 is not supported: each request gets one choice; send 2 requests instead.
"""

from __future__ import annotations

import base64
import sys
from array import array
from typing import Any, Literal, TypeVar

import pydantic

from cobalt._runtime.raw import RawResponse

DEFAULT_COMPLETION_TOKENS = 16
"""``max_tokens`` of ``/v1/completions`` when the request leaves it out (OpenAI's default)."""
DEFAULT_CHAT_TOKENS = 512
"""``max_tokens`` of ``/v1/chat/completions`` when the request leaves it out."""

M = TypeVar("M", bound=pydantic.BaseModel)


class OpenAIError(Exception):
    """An answer in OpenAI's error shape: ``{"error": {"message", "type", "param", "code"}}``.

    Attributes:
        status: the HTTP status (400 for a bad request, 404 for an unknown model...).
        message: what went wrong and what to send instead.
        type: ``"invalid_request_error"`` or ``"server_error"``.
        param: the request field at fault, if one is.
        code: a machine-readable reason, such as ``"model_not_found"``.
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        type: str = "invalid_request_error",
        param: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type
        self.param = param
        self.code = code

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def response(self) -> RawResponse:
        return RawResponse.json(self.body(), self.status)


class _Request(pydantic.BaseModel):
    """What completions and chat share: the sampling settings and streaming."""

    model_config = pydantic.ConfigDict(extra="allow")

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    stream: bool | None = False
    stream_options: dict[str, Any] | None = None
    n: int | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @property
    def include_usage(self) -> bool:
        return bool((self.stream_options or {}).get("include_usage"))


class CompletionRequest(_Request):
    """The body of ``POST /v1/completions``."""

    prompt: str | list[str] | list[int] | list[list[int]]
    logprobs: int | None = None
    echo: bool | None = None
    best_of: int | None = None
    suffix: str | None = None


class ChatMessage(pydantic.BaseModel):
    """One message of a chat: its content is text, or a list of text parts."""

    model_config = pydantic.ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatRequest(_Request):
    """The body of ``POST /v1/chat/completions``."""

    messages: list[ChatMessage]
    max_completion_tokens: int | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: list[Any] | None = None
    tool_choice: Any = None
    functions: list[Any] | None = None
    function_call: Any = None
    response_format: dict[str, Any] | None = None


class EmbeddingRequest(pydantic.BaseModel):
    """The body of ``POST /v1/embeddings``."""

    model_config = pydantic.ConfigDict(extra="allow")

    input: str | list[str] | list[int] | list[list[int]]
    model: str | None = None
    encoding_format: Literal["float", "base64"] | None = "float"
    dimensions: int | None = None
    user: str | None = None


def parse(model: type[M], body: bytes) -> M:
    """``body`` read as ``model``; an :class:`OpenAIError` (400) naming the first bad field."""
    try:
        return model.model_validate_json(body or b"{}")
    except pydantic.ValidationError as exc:
        first = exc.errors(include_url=False, include_context=False, include_input=False)[0]
        kind, loc = first["type"], first["loc"]
        if kind == "json_invalid":
            raise OpenAIError(
                400, f"the request body is not valid JSON ({first['msg']}); send a JSON object."
            ) from None
        if not loc:
            raise OpenAIError(400, "the request body must be a JSON object.") from None
        # A union reports each of its members: name the field, not the member.
        field = ".".join(str(p) for p in loc if not _is_member(p))
        param = str(loc[0])
        if kind == "missing":
            raise OpenAIError(400, f"{field!r} is required.", param=param) from None
        raise OpenAIError(400, f"{field!r}: {first['msg']}.", param=param) from None


def _is_member(part: str | int) -> bool:
    return isinstance(part, str) and ("[" in part or part in ("str", "int", "float", "bool"))


def refuse_unsupported(body: _Request) -> None:
    """A 400 for a known field whose value would change the answer in a way not served."""
    n = body.n
    if n is not None and n != 1:
        _refuse(
            "n", f"n={n} is not supported: each request gets one choice; send {n} requests instead."
        )
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(body, name):
            _refuse(name, f"{name} is not supported; leave it out or send 0.")
    if body.logit_bias:
        _refuse("logit_bias", "logit_bias is not supported; leave it out.")
    if isinstance(body, CompletionRequest):
        if body.logprobs:
            _refuse("logprobs", "logprobs are not supported; leave logprobs out.")
        if body.echo:
            _refuse("echo", "echo is not supported; prepend the prompt to the text yourself.")
        if body.best_of is not None and body.best_of != 1:
            _refuse("best_of", f"best_of={body.best_of} is not supported; leave it out.")
        if body.suffix:
            _refuse("suffix", "suffix (insertion) is not supported; leave it out.")
    if isinstance(body, ChatRequest):
        if body.logprobs or body.top_logprobs:
            _refuse("logprobs", "logprobs are not supported; leave logprobs and top_logprobs out.")
        if body.tools or body.functions:
            which = "tools" if body.tools else "functions"
            _refuse(which, "tool calling is not supported by this model server; leave tools out.")
        choice = body.tool_choice
        if choice is not None and choice not in ("none", "auto"):
            _refuse("tool_choice", "tool calling is not supported; leave tool_choice out.")
        kind = (body.response_format or {}).get("type", "text")
        if kind != "text":
            _refuse(
                "response_format",
                f"response_format {kind!r} is not supported; only plain text is generated.",
            )


def _refuse(param: str, message: str) -> None:
    raise OpenAIError(400, message, param=param, code="unsupported_parameter")


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


def encode_embedding(vector: list[float], encoding: str | None) -> list[float] | str:
    """A vector as floats, or as base64 of little-endian float32 (what OpenAI sends).

    Example:
        >>> encode_embedding([1.0, -2.0], "base64")
        'AACAPwAAAMA='
    """
    if encoding != "base64":
        return [float(v) for v in vector]
    packed = array("f", vector)
    if sys.byteorder != "little":
        packed.byteswap()
    return base64.b64encode(packed.tobytes()).decode("ascii")


def error_schema() -> dict[str, Any]:
    """The OpenAPI schema of an OpenAI error answer."""
    nullable = {"type": ["string", "null"]}
    return {
        "type": "object",
        "properties": {
            "error": {
                "type": "object",
                "properties": {
                    "message": {"type": "string"},
                    "type": {"type": "string"},
                    "param": nullable,
                    "code": nullable,
                },
                "required": ["message", "type"],
            }
        },
        "required": ["error"],
    }
