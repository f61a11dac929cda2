"""The official ``openai`` client against deployments serving ``openai_routes``.

A real controller, its gateway and real replicas; the client is pointed at
``dep.url + "/v1"`` with the deployment's token as its API key and is used
exactly as it would be against OpenAI.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import TYPE_CHECKING, Any

import pytest
from conftest import DEPLOY_CONFIG_TOML

import cobalt as ct
from cobalt.llm import openai_routes
from cobalt.llm._types import Chunk, SamplingParams

if TYPE_CHECKING:
    from conftest import ControllerHome

openai = pytest.importorskip("openai")

pytestmark = pytest.mark.integration

WORDS = ["alpha", "beta", "gamma", "delta"]


class FakeModel:
    """Generates the words above in turn and embeds text as [length, 0.5]; ``boom`` fails."""

    name = "fake-llm"

    def stream(self, prompt: Any, params: SamplingParams) -> Iterator[Chunk]:
        raise NotImplementedError

    async def astream(self, prompt: Any, params: SamplingParams) -> AsyncIterator[Chunk]:
        for i in range(params.max_tokens):
            if isinstance(prompt, str) and "boom" in prompt and i == 1:
                raise RuntimeError("the fake engine fell over")
            last = i == params.max_tokens - 1
            yield Chunk(WORDS[i % len(WORDS)] + " ", (i,), "length" if last else None)
            await asyncio.sleep(0.001)

    def chat_prompt(self, messages: Sequence[dict[str, Any]]) -> str:
        return " ".join(f"{m['role']}: {m['content']}" for m in messages) + " assistant:"

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [[float(len(t)), 0.5] for t in texts]

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        return self.embed(texts)

    def metrics(self) -> dict[str, Any]:
        return {}


@ct.service(name="fake-llm", cpus=0.25, min_replicas=1, max_replicas=1)
def fake_llm() -> dict[str, Any]:
    return {"engine": FakeModel()}


openai_routes(fake_llm)


@ct.service(name="tiny-llm", cpus=1, min_replicas=1, max_replicas=1)
def tiny_llm() -> dict[str, Any]:
    import cobalt.llm

    model, tokenizer = cobalt.llm.random_model(seed=0)
    return {"engine": cobalt.llm.Engine(model, tokenizer)}


openai_routes(tiny_llm, model_name="tiny")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ControllerHome]:
    from conftest import ControllerHome

    path = tmp_path_factory.mktemp("cobalt-openai")
    with ControllerHome(path, DEPLOY_CONFIG_TOML).serving() as h:
        yield h


@pytest.fixture(scope="module")
def dep(home: ControllerHome) -> Iterator[ct.Deployment]:
    with ct.deploy(fake_llm)() as d:
        yield d


@pytest.fixture(scope="module")
def client(dep: ct.Deployment) -> Iterator[Any]:
    with openai.OpenAI(base_url=dep.url + "/v1", api_key=dep.token, max_retries=0) as c:
        yield c


def test_completions_answer_text_and_usage(client: Any) -> None:
    done = client.completions.create(model="fake-llm", prompt="one two", max_tokens=3, seed=1)
    assert done.choices[0].text == "alpha beta gamma "
    assert done.choices[0].finish_reason == "length"
    assert (done.usage.prompt_tokens, done.usage.completion_tokens) == (2, 3)


def test_streamed_completions_end_with_usage(client: Any) -> None:
    stream = client.completions.create(
        model="fake-llm",
        prompt="one",
        max_tokens=4,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks if c.choices) == "alpha beta gamma delta "
    assert chunks[-1].usage.total_tokens == 5


def test_chat_answers_a_message(client: Any) -> None:
    done = client.chat.completions.create(
        model="fake-llm",
        messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        max_tokens=2,
        temperature=0,
        user="someone",
    )
    assert done.choices[0].message.role == "assistant"
    assert done.choices[0].message.content == "alpha beta "
    assert done.usage.prompt_tokens == 6  # "system: be brief user: hi assistant:"


def test_chat_streams_deltas_with_the_role_first_and_the_finish_reason_last(client: Any) -> None:
    stream = client.chat.completions.create(
        model="fake-llm",
        messages=[{"role": "user", "content": "hi"}],
        max_tokens=3,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == "alpha beta gamma "
    assert with_choices[-1].choices[0].finish_reason == "length"
    assert chunks[-1].usage.completion_tokens == 3


def test_embeddings_come_back_as_floats_by_default_base64_and_when_asked(client: Any) -> None:
    default = client.embeddings.create(model="fake-llm", input=["abc", "de"])  # base64 on the wire
    assert [d.embedding for d in default.data] == [[3.0, 0.5], [2.0, 0.5]]
    assert default.usage.prompt_tokens == 2
    floats = client.embeddings.create(model="fake-llm", input="abcd", encoding_format="float")
    assert floats.data[0].embedding == [4.0, 0.5]


def test_models_lists_the_model(client: Any) -> None:
    assert [m.id for m in client.models.list()] == ["fake-llm"]


def test_bad_requests_raise_the_clients_matching_errors_with_our_message(
    client: Any, dep: ct.Deployment
) -> None:
    with pytest.raises(openai.BadRequestError, match="max_tokens must be a whole number") as info:
        client.completions.create(model="fake-llm", prompt="x", max_tokens=0)
    assert info.value.param == "max_tokens"
    with pytest.raises(openai.BadRequestError, match="n=2 is not supported"):
        client.chat.completions.create(
            model="fake-llm", messages=[{"role": "user", "content": "x"}], n=2
        )
    with pytest.raises(openai.NotFoundError, match="this deployment serves 'fake-llm'"):
        client.completions.create(model="gpt-4o", prompt="x")
    wrong = openai.OpenAI(base_url=dep.url + "/v1", api_key="not-the-token", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_a_failure_mid_stream_raises_in_the_client(client: Any) -> None:
    stream = client.chat.completions.create(
        model="fake-llm",
        messages=[{"role": "user", "content": "boom"}],
        max_tokens=5,
        stream=True,
    )
    with pytest.raises(openai.APIError, match="the fake engine fell over"):
        list(stream)


def test_the_async_client_streams_too(dep: ct.Deployment) -> None:
    async def go() -> str:
        async with openai.AsyncOpenAI(base_url=dep.url + "/v1", api_key=dep.token) as client:
            stream = await client.chat.completions.create(
                model="fake-llm",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=2,
                stream=True,
            )
            return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    assert asyncio.run(go()) == "alpha beta "


def test_the_handle_and_openapi_describe_the_openai_routes(dep: ct.Deployment) -> None:
    assert {"/v1/completions", "/v1/chat/completions", "/v1/embeddings", "/v1/models"} <= set(
        dep.routes
    )
    assert dep.openai_models()["data"][0]["id"] == "fake-llm"
    done = dep.openai_completions(prompt="a", max_tokens=1)
    assert done["choices"][0]["text"] == "alpha "
    paths = dep.openapi()["paths"]
    assert set(paths["/v1/models"]) == {"get", "post"}
    assert "messages" in str(paths["/v1/chat/completions"]["post"]["requestBody"])


def test_a_real_engine_streams_a_chat_through_the_openai_client(home: ControllerHome) -> None:
    pytest.importorskip("transformers")
    with (
        ct.deploy(tiny_llm)() as dep,
        openai.OpenAI(base_url=dep.url + "/v1", api_key=dep.token, max_retries=0) as client,
    ):
        assert [m.id for m in client.models.list()] == ["tiny"]
        stream = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Say hi"}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
        with_choices = [c for c in chunks if c.choices]
        assert with_choices[0].choices[0].delta.role == "assistant"
        assert with_choices[-1].choices[0].finish_reason in ("length", "stop")
        usage = chunks[-1].usage
        assert usage.prompt_tokens > 0 and 0 < usage.completion_tokens <= 8
        again = client.chat.completions.create(
            model="tiny",
            messages=[{"role": "user", "content": "Say hi"}],
            max_tokens=8,
            temperature=0,
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in with_choices)
        assert again.choices[0].message.content == streamed  # greedy: the same text
