"""backend="auto" picks vLLM where it can run, and the engine speaks to it correctly.

vLLM needs a CUDA GPU, so here a stand-in module with vLLM's interface
(``AsyncEngineArgs``, ``AsyncLLMEngine.from_engine_args``, ``generate``
yielding cumulative outputs, ``abort``, ``SamplingParams``) takes its place;
it checks what cobalt sends and returns what vLLM would.
"""

from __future__ import annotations

import asyncio
import importlib.machinery
import json
import sys
import types
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")

import cobalt as ct  # noqa: E402

pytestmark = pytest.mark.unit

WORDS = ["Hello", " there", ",", " friend", "!"]


class FakeEngine:
    created: list[dict[str, Any]] = []
    aborted: list[str] = []
    adapters: list[Any] = []

    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options

    @classmethod
    def from_engine_args(cls, args: Any) -> FakeEngine:
        asyncio.get_running_loop()  # created on the loop that drives it
        cls.created.append(args.options)
        return cls(args.options)

    async def generate(
        self, request: Any, params: Any, request_id: str, lora_request: Any = None
    ) -> AsyncIterator[Any]:
        self.adapters.append(lora_request)
        prompt_ids = request["prompt_token_ids"]
        n = min(params.options["max_tokens"], len(WORDS))
        for i in range(1, n + 1):
            finished = i == n
            reason = "length" if params.options["max_tokens"] <= len(WORDS) else "stop"
            yield types.SimpleNamespace(
                finished=finished,
                prompt_token_ids=prompt_ids,
                outputs=[
                    types.SimpleNamespace(
                        text="".join(WORDS[:i]),
                        token_ids=list(range(i)),
                        finish_reason=reason if finished else None,
                    )
                ],
            )
            await asyncio.sleep(0)

    async def abort(self, request_id: str) -> None:
        self.aborted.append(request_id)


class Options:
    def __init__(self, **options: Any) -> None:
        self.options = options


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    module = types.ModuleType("vllm")
    module.__spec__ = importlib.machinery.ModuleSpec("vllm", None)
    module.AsyncEngineArgs = Options  # type: ignore[attr-defined]
    module.AsyncLLMEngine = FakeEngine  # type: ignore[attr-defined]
    module.SamplingParams = Options  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm", module)
    lora = types.ModuleType("vllm.lora.request")
    lora.LoRARequest = lambda *fields: fields  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vllm.lora", types.ModuleType("vllm.lora"))
    monkeypatch.setitem(sys.modules, "vllm.lora.request", lora)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    FakeEngine.created.clear()
    FakeEngine.aborted.clear()
    FakeEngine.adapters.clear()
    yield


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-llama")
    model, tokenizer = ct.llm.random_model("tiny", seed=0)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def test_auto_picks_vllm_for_a_path_and_passes_the_options(
    fake_vllm: None, model_dir: Path
) -> None:
    engine = ct.llm.Engine(str(model_dir), max_batch_size=8, draft=str(model_dir))
    try:
        assert engine.backend == "vllm"
        (options,) = FakeEngine.created
        assert options["model"] == str(model_dir)
        assert options["max_num_seqs"] == 8 and options["enable_prefix_caching"] is True
        assert options["speculative_config"] == {
            "model": str(model_dir),
            "num_speculative_tokens": 4,
        }
        chunks = list(engine.stream("Hi", max_tokens=3, temperature=0))
        assert [c.text for c in chunks] == ["Hello", " there", ","]
        assert [len(c.token_ids) for c in chunks] == [1, 1, 1]
        assert chunks[-1].finish_reason == "length"
        many = engine.generate(["a", "b"], max_tokens=9, temperature=0.5, stop=["!"])
        assert [c.text for c in many] == ["Hello there, friend!"] * 2
        assert all(c.finish_reason == "stop" for c in many)

        async def main() -> str:
            done = await engine.agenerate("Hi", max_tokens=2)
            text = "".join([c.text async for c in engine.astream("Hi", max_tokens=2)])
            return done.text + "|" + text

        assert asyncio.run(main()) == "Hello there|Hello there"
        metrics = engine.metrics()
        assert metrics["requests"] == 5 and metrics["time_to_first_token"]["count"] == 5
        assert len(FakeEngine.aborted) == 5, "each request is released in vLLM when it ends"
        with pytest.raises(ct.SpecError, match="backend='torch'"):
            engine.embed(["x"])
    finally:
        engine.close()


def test_vllm_refuses_what_only_the_torch_backend_does(fake_vllm: None, model_dir: Path) -> None:
    with pytest.raises(ct.SpecError, match="draft= takes the path"):
        ct.llm.Engine(str(model_dir), draft="int8")
    model, tokenizer = ct.llm.random_model("tiny", seed=0)
    with pytest.raises(ct.SpecError, match="pass its path"):
        ct.llm.Engine(model, tokenizer, backend="vllm")
    engine = ct.llm.Engine(model, tokenizer)  # a model object: torch, even where vLLM runs
    try:
        assert engine.backend == "torch"
    finally:
        engine.close()


def test_without_vllm_a_path_runs_on_torch(model_dir: Path) -> None:
    engine = ct.llm.Engine(str(model_dir))
    try:
        assert engine.backend == "torch"
        assert engine.generate("Hi", max_tokens=3, temperature=0).completion_tokens == 3
    finally:
        engine.close()


def test_vllm_serves_lora_adapters_per_request(
    fake_vllm: None, model_dir: Path, tmp_path: Path
) -> None:
    folders = {}
    for name, rank in (("sql", 8), ("poet", 16)):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "adapter_config.json").write_text(
            json.dumps({"peft_type": "LORA", "r": rank, "lora_alpha": 16})
        )
        folders[name] = str(folder)
    engine = ct.llm.Engine(str(model_dir), adapters=folders)
    try:
        (options,) = FakeEngine.created
        assert options["enable_lora"] is True
        assert options["max_loras"] == 2 and options["max_lora_rank"] == 16
        engine.generate("Hi", max_tokens=2, adapter="poet")
        engine.with_adapter("sql").generate("Hi", max_tokens=2)
        engine.generate("Hi", max_tokens=2)
        assert FakeEngine.adapters == [
            ("poet", 2, folders["poet"]),
            ("sql", 1, folders["sql"]),
            None,
        ]
        with pytest.raises(ct.SpecError, match="'prose' is not served"):
            engine.generate("Hi", max_tokens=2, adapter="prose")
    finally:
        engine.close()
    with pytest.raises(ct.SpecError, match=r"adapter_config\.json"):
        ct.llm.Engine(str(model_dir), adapters={"none": str(tmp_path / "missing")})
