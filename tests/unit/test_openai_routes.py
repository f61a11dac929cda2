"""OpenAI-compatible routes, driven in-process through a replica's ASGI app with fake models."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import doctest
import json
import struct
from collections.abc import AsyncIterator, Iterator, Sequence
from types import ModuleType
from typing import Any

import httpx
import pytest

import cobalt as ct
from cobalt._runtime import raw as _raw
from cobalt._runtime.replica_app import ReplicaApp
from cobalt.llm import _openai, _openai_schema, _openai_server, _openai_stream, openai_routes
from cobalt.llm._types import Chunk, SamplingParams
from cobalt_common.deploy import Manifest, Route

pytestmark = pytest.mark.unit

SECRET = "s3cret"
HEADERS = {"x-cobalt-replica-secret": SECRET, "x-request-id": "req-1"}
WORDS = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta", "theta"]


class FakeText:
    """Generates the words above in turn, one token each; ``boom`` in the prompt fails."""

    name = "fake-llm"

    def __init__(self) -> None:
        self.prompts: list[Any] = []
        self.params: list[SamplingParams] = []
        self.closed = 0

    def stream(self, prompt: Any, params: SamplingParams) -> Iterator[Chunk]:
        raise NotImplementedError

    async def astream(self, prompt: Any, params: SamplingParams) -> AsyncIterator[Chunk]:
        if isinstance(prompt, str) and "too long" in prompt:
            raise ct.SpecError("the prompt is 9000 tokens, over the model's 2048.")
        self.prompts.append(prompt)
        self.params.append(params)
        try:
            for i in range(params.max_tokens):
                if isinstance(prompt, str) and "boom" in prompt and i == 2:
                    raise RuntimeError("the engine fell over")
                word = WORDS[i % len(WORDS)]
                if word in params.stop:
                    yield Chunk("", (i,), "stop")
                    return
                last = i == params.max_tokens - 1
                yield Chunk(word + " ", (i,), "length" if last else None)
                await asyncio.sleep(0)
        finally:
            self.closed += 1

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        return "".join(f"<{m['role']}>{m['content']}" for m in messages) + "<assistant>"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def metrics(self) -> dict[str, Any]:
        return {}


class FakeEmbedder:
    name = "fake-embed"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(len(t)), 0.5, -1.25] for t in texts]

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed(texts)

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def metrics(self) -> dict[str, Any]:
        return {}


def make_app(values: dict[str, Any], **options: Any) -> ReplicaApp:
    svc = ct.service(lambda: values, name="llm")
    openai_routes(svc, **options)
    return ReplicaApp(svc, values, secret=SECRET)


@pytest.fixture
def text() -> FakeText:
    return FakeText()


@pytest.fixture
def app(text: FakeText) -> Iterator[ReplicaApp]:
    made = make_app({"engine": text})
    yield made
    made.close()


@pytest.fixture
def embed_app() -> Iterator[ReplicaApp]:
    made = make_app({"embedder": FakeEmbedder()}, engine="embedder", model_name="minilm")
    yield made
    made.close()


def call(app: ReplicaApp, path: str, body: Any = None, method: str = "POST") -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://replica") as client:
            content = body if isinstance(body, bytes) else json.dumps(body).encode()
            if body is None:
                content = b""
            return await client.request(method, path, content=content, headers=HEADERS)

    return asyncio.run(go())


def events(r: httpx.Response) -> list[Any]:
    """The data of each event, checking the framing: ``data: <json>\\n\\n`` ... ``[DONE]``."""
    assert r.headers["content-type"].startswith("text/event-stream")
    raw = r.text
    assert raw.endswith("data: [DONE]\n\n")
    blocks = raw.split("\n\n")
    assert blocks[-1] == ""
    out: list[Any] = []
    for block in blocks[:-2]:
        assert block.startswith("data: ") and "\n" not in block
        out.append(json.loads(block[6:]))
    return out


def error_of(r: httpx.Response, status: int) -> dict[str, Any]:
    assert r.status_code == status, r.text
    error: dict[str, Any] = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    return error


# -- completions -----------------------------------------------------------------------


def test_a_completion_answers_text_finish_reason_and_usage(app: ReplicaApp, text: FakeText) -> None:
    body = {"model": "fake-llm", "prompt": "one two", "max_tokens": 3, "temperature": 0, "seed": 7}
    r = call(app, "/v1/completions", body)
    assert r.status_code == 200
    data = r.json()
    assert data["object"] == "text_completion" and data["model"] == "fake-llm"
    assert data["id"].startswith("cmpl-")
    assert data["choices"] == [
        {"index": 0, "text": "alpha beta gamma ", "logprobs": None, "finish_reason": "length"}
    ]
    assert data["usage"] == {"prompt_tokens": 2, "completion_tokens": 3, "total_tokens": 5}
    assert text.params[0] == SamplingParams(3, 0.0, 1.0, (), 7)


def test_a_completion_defaults_to_16_tokens_and_stops_at_a_stop_string(
    app: ReplicaApp, text: FakeText
) -> None:
    call(app, "/v1/completions", {"model": "fake-llm", "prompt": "x"})
    assert text.params[0].max_tokens == 16
    r = call(app, "/v1/completions", {"prompt": "x", "stop": ["gamma"], "max_tokens": 9})
    choice = r.json()["choices"][0]
    assert (choice["text"], choice["finish_reason"]) == ("alpha beta ", "stop")


def test_several_prompts_and_token_id_prompts_get_one_choice_each(
    app: ReplicaApp, text: FakeText
) -> None:
    r = call(app, "/v1/completions", {"prompt": ["a b", "c"], "max_tokens": 2})
    data = r.json()
    assert [c["index"] for c in data["choices"]] == [0, 1]
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    ids = call(app, "/v1/completions", {"prompt": [5, 6, 7], "max_tokens": 1}).json()
    assert ids["usage"]["prompt_tokens"] == 3 and text.prompts[-1] == [5, 6, 7]


def test_a_streamed_completion_is_server_sent_events_ending_with_done(app: ReplicaApp) -> None:
    body = {
        "prompt": "a",
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = events(call(app, "/v1/completions", body))
    texts = [c["choices"][0]["text"] for c in chunks if c["choices"]]
    assert "".join(texts) == "alpha beta gamma "
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    assert len({c["id"] for c in chunks}) == 1


# -- chat ------------------------------------------------------------------------------


def test_a_chat_goes_through_the_chat_template_and_answers_a_message(
    app: ReplicaApp, text: FakeText
) -> None:
    messages = [
        {"role": "developer", "content": "be brief"},
        {
            "role": "user",
            "content": [{"type": "text", "text": "hi"}, {"type": "text", "text": "you"}],
        },
    ]
    r = call(
        app,
        "/v1/chat/completions",
        {"model": "fake-llm", "messages": messages, "max_completion_tokens": 2},
    )
    data = r.json()
    assert text.prompts == ["<system>be brief<user>hi\nyou<assistant>"]
    assert data["object"] == "chat.completion" and data["id"].startswith("chatcmpl-")
    assert data["choices"] == [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "alpha beta "},
            "logprobs": None,
            "finish_reason": "length",
        }
    ]
    assert data["usage"] == {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}


def test_a_chat_without_max_tokens_gets_the_chat_default(app: ReplicaApp, text: FakeText) -> None:
    call(app, "/v1/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
    assert text.params[0].max_tokens == 512


def test_a_streamed_chat_sends_the_role_first_then_deltas_then_the_finish_reason(
    app: ReplicaApp,
) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 3,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    chunks = events(call(app, "/v1/chat/completions", body))
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert deltas[0] == {"role": "assistant", "content": ""}
    assert "".join(d.get("content", "") for d in deltas) == "alpha beta gamma "
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes[-1] == "length" and not any(finishes[:-1])
    assert chunks[-1]["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}


# -- embeddings and models -------------------------------------------------------------


def test_embeddings_come_as_floats_or_base64_float32_with_usage(embed_app: ReplicaApp) -> None:
    floats = call(embed_app, "/v1/embeddings", {"model": "minilm", "input": ["ab c", "d"]}).json()
    assert floats["object"] == "list" and floats["model"] == "minilm"
    assert [d["embedding"] for d in floats["data"]] == [[4.0, 0.5, -1.25], [1.0, 0.5, -1.25]]
    assert [d["index"] for d in floats["data"]] == [0, 1]
    assert floats["usage"] == {"prompt_tokens": 3, "total_tokens": 3}
    body = {"model": "minilm", "input": "ab c", "encoding_format": "base64"}
    packed = call(embed_app, "/v1/embeddings", body).json()["data"][0]["embedding"]
    assert struct.unpack("<3f", base64.b64decode(packed)) == (4.0, 0.5, -1.25)


def test_models_lists_the_served_name_on_get_and_post(embed_app: ReplicaApp) -> None:
    for method in ("GET", "POST"):
        data = call(embed_app, "/v1/models", method=method).json()
        assert data["object"] == "list"
        assert [(m["id"], m["object"], m["owned_by"]) for m in data["data"]] == [
            ("minilm", "model", "cobalt")
        ]


# -- errors ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"prompt": "a", "max_tokens": 0}, "max_tokens", "max_tokens must be a whole number"),
        ({"prompt": "a", "temperature": -1}, "temperature", "temperature must be a finite"),
        ({"prompt": "a", "top_p": 0}, "top_p", "top_p must be in (0, 1]"),
        ({"prompt": "a", "n": 2}, "n", "n=2 is not supported"),
        ({"prompt": "a", "logprobs": 2}, "logprobs", "logprobs are not supported"),
        ({"prompt": "a", "echo": True}, "echo", "echo is not supported"),
        ({"prompt": "a", "presence_penalty": 0.5}, "presence_penalty", "not supported"),
        ({"max_tokens": 3}, "prompt", "'prompt' is required"),
        ({"prompt": "a", "max_tokens": "many"}, "max_tokens", "valid integer"),
        ({"prompt": []}, "prompt", "'prompt' is empty"),
    ],
)
def test_bad_completion_requests_get_400_in_openais_shape(
    app: ReplicaApp, body: dict[str, Any], param: str, words: str
) -> None:
    error = error_of(call(app, "/v1/completions", body), 400)
    assert error["param"] == param and words in error["message"]
    assert error["type"] == "invalid_request_error"


@pytest.mark.parametrize(
    ("body", "param", "words"),
    [
        ({"messages": [], "logprobs": True}, "logprobs", "logprobs are not supported"),
        ({"messages": [], "tools": [{"type": "function"}]}, "tools", "tool calling"),
        ({"messages": [], "response_format": {"type": "json_object"}}, "response_format", "text"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages.0.role", "role 'tool'"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "messages.0.content",
            "only text parts",
        ),
        ({"messages": []}, "messages", "'messages' is empty"),
        ({}, "messages", "'messages' is required"),
    ],
)
def test_bad_chat_requests_get_400_naming_the_field(
    app: ReplicaApp, body: dict[str, Any], param: str, words: str
) -> None:
    error = error_of(call(app, "/v1/chat/completions", body), 400)
    assert error["param"] == param and words in error["message"]


def test_fields_openai_clients_send_with_neutral_values_are_accepted(app: ReplicaApp) -> None:
    body = {
        "messages": [{"role": "user", "content": "hi", "name": "ann"}],
        "max_tokens": 1,
        "user": "u-1",
        "logprobs": False,
        "top_logprobs": None,
        "frequency_penalty": 0,
        "presence_penalty": 0.0,
        "n": 1,
        "tool_choice": "none",
        "response_format": {"type": "text"},
        "metadata": {"k": "v"},
        "store": False,
        "a_field_from_a_newer_client": [1, 2],
    }
    assert call(app, "/v1/chat/completions", body).status_code == 200


def test_invalid_json_and_an_unknown_model_get_openai_errors(app: ReplicaApp) -> None:
    bad = error_of(call(app, "/v1/chat/completions", b"{nope"), 400)
    assert "not valid JSON" in bad["message"]
    unknown = error_of(call(app, "/v1/completions", {"model": "gpt-4o", "prompt": "a"}), 404)
    assert unknown["code"] == "model_not_found" and "'fake-llm'" in unknown["message"]


def test_routes_a_model_cannot_serve_answer_404_saying_what_it_serves(
    app: ReplicaApp, embed_app: ReplicaApp
) -> None:
    chat = {"model": "minilm", "messages": [{"role": "user", "content": "x"}]}
    error = error_of(call(embed_app, "/v1/chat/completions", chat), 404)
    assert error["code"] == "model_not_supported" and "/v1/embeddings" in error["message"]
    error = error_of(call(app, "/v1/embeddings", {"input": "x"}), 404)
    assert "does not embed text" in error["message"]


def test_an_engine_refusal_before_the_stream_starts_is_a_status_not_an_event(
    app: ReplicaApp,
) -> None:
    body = {"prompt": "far too long", "stream": True}
    error = error_of(call(app, "/v1/completions", body), 400)
    assert "9000 tokens" in error["message"]


def test_an_engine_failure_is_a_500_with_an_error_id_in_the_log(
    app: ReplicaApp, capsys: pytest.CaptureFixture[str]
) -> None:
    error = error_of(call(app, "/v1/completions", {"prompt": "boom", "max_tokens": 5}), 500)
    assert error["type"] == "server_error"
    assert "RuntimeError: the engine fell over" in error["message"]
    eid = error["message"].split("error id ")[1].split(";")[0]
    assert f"error {eid} in openai_completions" in capsys.readouterr().err


def test_a_failure_mid_stream_is_an_error_event_before_done(app: ReplicaApp) -> None:
    body = {"messages": [{"role": "user", "content": "boom"}], "max_tokens": 5, "stream": True}
    chunks = events(call(app, "/v1/chat/completions", body))
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert "the engine fell over" in chunks[-1]["error"]["message"]


def test_wrong_methods_get_405_with_allow(app: ReplicaApp) -> None:
    r = call(app, "/v1/completions", method="GET")
    assert r.status_code == 405 and r.headers["allow"] == "POST"
    r = call(app, "/v1/models", method="DELETE")
    assert r.status_code == 405 and r.headers["allow"] == "GET, POST"


def test_a_client_that_leaves_mid_stream_closes_the_engines_stream(
    app: ReplicaApp, text: FakeText
) -> None:
    async def go() -> list[dict[str, Any]]:
        body = json.dumps({"prompt": "a", "max_tokens": 500, "stream": True}).encode()
        sent: list[dict[str, Any]] = []
        incoming: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        await incoming.put({"type": "http.request", "body": body, "more_body": False})

        async def receive() -> dict[str, Any]:
            return await incoming.get()

        async def send(message: dict[str, Any]) -> None:
            sent.append(message)
            if sum(1 for m in sent if m.get("body")) == 3:
                await incoming.put({"type": "http.disconnect"})
            await asyncio.sleep(0)

        headers = [(k.encode(), v.encode()) for k, v in HEADERS.items()]
        scope = {"type": "http", "method": "POST", "path": "/v1/completions", "headers": headers}
        await asyncio.wait_for(app(scope, receive, send), 5)
        return sent

    sent = asyncio.run(go())
    assert sent[0]["status"] == 200
    assert len(sent) < 20 and text.closed == 1
    assert app.in_flight == 0


# -- declaration -----------------------------------------------------------------------


def test_openai_routes_are_raw_routes_in_the_manifest_and_survive_json() -> None:
    svc = openai_routes(ct.service(lambda: {}, name="llm"))
    manifest = svc.manifest()
    routes = {r.path: r for r in manifest.routes}
    assert routes["/v1/models"] == Route(
        "openai_models", "/v1/models", methods=("GET", "POST"), raw=True
    )
    assert routes["/v1/chat/completions"].name == "openai_chat_completions"
    assert Manifest.from_json(manifest.to_json()) == manifest
    old = {
        k: v
        for k, v in dataclasses.asdict(routes["/v1/embeddings"]).items()
        if k not in ("methods", "raw")
    }
    assert Route.from_dict(old) == Route("openai_embeddings", "/v1/embeddings")


def test_the_openapi_document_describes_the_openai_routes(app: ReplicaApp) -> None:
    doc = app.openapi()
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    schema = chat["requestBody"]["content"]["application/json"]["schema"]
    assert "messages" in schema["properties"]
    assert set(chat["responses"]["200"]["content"]) == {"application/json", "text/event-stream"}
    assert set(doc["paths"]["/v1/models"]) == {"get", "post"}
    assert "ChatMessage" in doc["components"]["schemas"]
    json.dumps(doc)


@pytest.mark.parametrize(
    ("args", "kwargs", "words"),
    [
        ((lambda: {},), {}, "takes a @ct.service"),
        ((None,), {"engine": "engine"}, "takes a @ct.service"),
        (("svc",), {"engine": ""}, "engine=''"),
        (("svc",), {"engine": 3}, "engine=3"),
        (("svc",), {"model_name": " "}, "model_name=' '"),
    ],
)
def test_openai_routes_checks_its_arguments_where_it_is_called(
    args: tuple[Any, ...], kwargs: dict[str, Any], words: str
) -> None:
    svc = ct.service(lambda: {}, name="llm")
    given = tuple(svc if a == "svc" else a for a in args)
    with pytest.raises(ct.SpecError, match="openai_routes") as info:
        openai_routes(*given, **kwargs)
    assert words in str(info.value)


def test_openai_routes_twice_or_over_an_endpoint_is_refused() -> None:
    svc = openai_routes(ct.service(lambda: {}, name="llm"))
    with pytest.raises(ct.SpecError, match="already serves openai_completions"):
        openai_routes(svc)


def test_a_replica_without_the_engine_key_or_with_no_model_fails_to_start() -> None:
    svc = openai_routes(ct.service(lambda: {}, name="llm"))
    with pytest.raises(ct.SpecError, match=r"returned 'model'; return the engine as"):
        ReplicaApp(svc, {"model": FakeText()})
    with pytest.raises(ct.SpecError, match="neither generates text"):
        ReplicaApp(svc, {"engine": "a string"})


@pytest.mark.parametrize(
    "module",
    [_raw, _openai, _openai_schema, _openai_server, _openai_stream],
    ids=lambda m: m.__name__,
)
def test_the_docstring_examples_run(module: ModuleType) -> None:
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0
