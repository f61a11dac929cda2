"""``ct.llm.openai_routes``: serve a service's model through OpenAI's API.

The routes are declared on the service when it is defined; the engine they
call is the value the initializer returns under ``engine=``, found once in
each replica as it starts. Any OpenAI client then works against the
deployment, with its token as the API key:

- ``POST /v1/completions``: a prompt (a string, token ids, or a list of
  either), JSON or streamed;
- ``POST /v1/chat/completions``: messages through the engine's chat
  template, JSON or streamed with ``delta`` chunks;
- ``POST /v1/embeddings``: a string or a list, as floats or base64;
- ``GET /v1/models``: the model's name.

Example:
    >>> import cobalt as ct
    >>> @ct.service(name="tiny-llm", cpus=2)
    ... def llm():
    ...     return {"engine": ...}  # such as ct.llm.Engine(model, tokenizer)
    >>> openai_routes(llm) is llm
    True
    >>> [(r.path, r.methods) for r in llm.manifest().routes]  # doctest: +NORMALIZE_WHITESPACE
    [('/v1/completions', ('POST',)), ('/v1/chat/completions', ('POST',)),
     ('/v1/embeddings', ('POST',)), ('/v1/models', ('GET', 'POST'))]

    Once deployed::

        dep = ct.deploy(llm)()
        client = openai.OpenAI(base_url=dep.url + "/v1", api_key=dep.token)
        client.chat.completions.create(model=..., messages=[...], stream=True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pydantic

from cobalt._runtime.raw import RawHandler
from cobalt._service import Service
from cobalt.llm._openai_schema import (
    ChatRequest,
    CompletionRequest,
    EmbeddingRequest,
    error_schema,
)
from cobalt.llm._openai_server import OpenAIServer
from cobalt_common.errors import SpecError

_REF = "#/components/schemas/{model}"


@dataclass(frozen=True, slots=True)
class _Bind:
    """Makes one route's handler from the initializer's values, in a replica."""

    route: str
    key: str
    service: str
    model_name: str | None

    def __call__(self, values: Mapping[str, Any]) -> RawHandler:
        if self.key not in values:
            keys = ", ".join(repr(k) for k in values) or "nothing"
            raise SpecError(
                f"openai_routes of service {self.service!r} looks for the model under "
                f"{self.key!r}, but the initializer returned {keys}; return the engine as "
                f"{{{self.key!r}: engine}}, or pass openai_routes(service, engine=<its key>)."
            )
        engine = values[self.key]
        server = OpenAIServer(engine, self.model_name or _name_of(engine, self.key))
        if not (server.generates or server.embeds):
            raise SpecError(
                f"openai_routes of service {self.service!r}: the value under {self.key!r} is "
                f"a {type(engine).__name__}, which neither generates text (astream, "
                "chat_prompt, count_tokens) nor embeds it (aembed or embed, count_tokens); "
                "return a ct.llm.Engine or another TextModel or EmbeddingModel there."
            )
        handler: RawHandler = getattr(server, self.route)
        return handler


def _name_of(engine: Any, key: str) -> str:
    name = getattr(engine, "name", None)
    return name if isinstance(name, str) and name else key


def openai_routes(
    service: Service[Any], *, engine: str = "engine", model_name: str | None = None
) -> Service[Any]:
    """Serve the model under ``engine`` in ``service``'s values through OpenAI's API.

    Adds ``/v1/completions``, ``/v1/chat/completions``, ``/v1/embeddings``
    and ``/v1/models`` to the service. A route the model cannot serve (chat
    on an embedding model...) answers 404 saying which it does serve. In the
    deployment handle they are the methods ``openai_completions``,
    ``openai_chat_completions``, ``openai_embeddings`` and ``openai_models``,
    which post a JSON body and return the JSON answer (stream with an OpenAI
    client).

    Args:
        service: the ``@ct.service`` whose initializer returns the model.
        engine: the key of the model in the initializer's dict: a
            :class:`~cobalt.llm.TextModel` (such as :class:`cobalt.llm.Engine`),
            an :class:`~cobalt.llm.EmbeddingModel`, or one object that is both.
        model_name: the name clients send as ``model`` (default: the model's
            ``name``). A request naming another model gets 404.

    Returns:
        ``service``, so that calls can be chained.

    Raises:
        SpecError: ``service`` is not a service, ``engine`` or ``model_name``
            is not a non-empty string, or the service serves these paths already.

    Example:
        >>> import cobalt as ct
        >>> embedder = ct.service(lambda: {"embedder": ...}, name="embedder")
        >>> openai_routes(embedder, engine="embedder", model_name="minilm").name
        'embedder'
        >>> try:
        ...     openai_routes(lambda: {})
        ... except ct.SpecError as exc:
        ...     print(exc)  # doctest: +ELLIPSIS
        openai_routes takes a @ct.service (the function it decorates), not a function; ...
    """
    if not isinstance(service, Service):
        raise SpecError(
            f"openai_routes takes a @ct.service (the function it decorates), not a "
            f"{type(service).__name__}; decorate the initializer with @ct.service(...) first."
        )
    if not isinstance(engine, str) or not engine:
        raise SpecError(
            f"openai_routes(engine={engine!r}) must be the key under which the initializer "
            'returns the model, such as engine="engine".'
        )
    if model_name is not None and (not isinstance(model_name, str) or not model_name.strip()):
        raise SpecError(
            f"openai_routes(model_name={model_name!r}) must be a non-empty string, or None to "
            "use the model's own name."
        )
    routes = (
        ("completions", "/v1/completions", ("POST",), CompletionRequest),
        ("chat", "/v1/chat/completions", ("POST",), ChatRequest),
        ("embeddings", "/v1/embeddings", ("POST",), EmbeddingRequest),
        ("models", "/v1/models", ("GET", "POST"), None),
    )
    for method, path, methods, body in routes:
        name = "openai_" + path.removeprefix("/v1/").replace("/", "_")
        bind = _Bind(method, engine, service.name, model_name)
        service.add_raw_route(
            name, path, bind, methods=methods, openapi=_operations(name, path, methods, body)
        )
    return service


def _operations(
    name: str, path: str, methods: tuple[str, ...], body: type[pydantic.BaseModel] | None
) -> dict[str, Any]:
    """The OpenAPI operations of one route: a short description, OpenAI's being the reference."""
    answer: dict[str, Any] = {"application/json": {"schema": {"type": "object"}}}
    if body is not None and body is not EmbeddingRequest:
        answer["text/event-stream"] = {
            "schema": {"type": "string"},
            "description": "with stream=true: `data: <chunk json>` events, then `data: [DONE]`",
        }
    error = {"application/json": {"schema": error_schema()}}
    operation: dict[str, Any] = {
        "summary": f"OpenAI-compatible {path}",
        "description": f"Answers as OpenAI's {path} does; see its API reference.",
        "responses": {
            "200": {"description": "The answer, in OpenAI's shape.", "content": answer},
            "400": {"description": "A field is invalid or not supported.", "content": error},
            "404": {"description": "Unknown model, or not served by it.", "content": error},
        },
    }
    if body is not None:
        schema = body.model_json_schema(ref_template=_REF)
        operation["$defs"] = schema.pop("$defs", {})
        operation["requestBody"] = {
            "required": True,
            "content": {"application/json": {"schema": schema}},
        }
    return {
        method.lower(): {**operation, "operationId": name if method == "POST" else f"{name}_get"}
        for method in methods
    }
