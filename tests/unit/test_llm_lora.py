"""LoRA adapters on one base: trained by ct.llm.train_lora, served per request, checked
against peft merging each adapter into its own copy of the base."""

from __future__ import annotations

import asyncio
import copy
import json
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

import cobalt as ct  # noqa: E402
from cobalt._runtime.raw import RawRequest  # noqa: E402
from cobalt.llm._openai_server import OpenAIServer  # noqa: E402

pytestmark = pytest.mark.unit

PROMPTS = ["The weather today", "Once upon a time", "SELECT name FROM", "Roses are red"]
TARGETS = [
    ["q_proj", "v_proj"],
    ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
    ["up_proj", "down_proj"],
]


def _adapter(base: Any, folder: Path, targets: list[str], rank: int, seed: int) -> Any:
    """A peft adapter with random (non-zero) B, saved; returns its merged copy of the base."""
    torch.manual_seed(seed)
    config = peft.LoraConfig(
        r=rank, lora_alpha=2 * rank, target_modules=targets, init_lora_weights=False
    )
    model = peft.get_peft_model(copy.deepcopy(base), config)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                parameter.mul_(0.5)
    model.save_pretrained(str(folder), save_embedding_layers=False)  # no lookup online
    return model.merge_and_unload()


@pytest.fixture(scope="module")
def adapters(tmp_path_factory: pytest.TempPathFactory) -> tuple[Any, Any, dict[str, str], list]:
    base, tokenizer = ct.llm.random_model(seed=0)
    root = tmp_path_factory.mktemp("adapters")
    folders, merged = {}, []
    for i, targets in enumerate(TARGETS):
        folder = root / f"a{i}"
        merged.append(_adapter(base, folder, targets, rank=4 + 2 * i, seed=i))
        folders[f"style-{i}"] = str(folder)
    return base, tokenizer, folders, merged


def _alone(model: Any, tokenizer: Any, prompt: str) -> tuple[int, ...]:
    engine = ct.llm.Engine(model, tokenizer, prefix_cache=False)
    try:
        return engine.generate(prompt, max_tokens=12, temperature=0).token_ids
    finally:
        engine.close()


def test_three_adapters_in_one_batch_each_give_what_the_adapter_merged_alone_gives(
    adapters: tuple[Any, Any, dict[str, str], list],
) -> None:
    base, tokenizer, folders, merged = adapters
    names = [*folders, None]
    engine = ct.llm.Engine(base, tokenizer, adapters=folders)
    try:

        async def together() -> list[tuple[int, ...]]:
            done = await asyncio.gather(
                *(
                    engine.agenerate(p, max_tokens=12, temperature=0, adapter=a)
                    for p, a in zip(PROMPTS, names, strict=True)
                )
            )
            return [d.token_ids for d in done]

        batched = asyncio.run(together())
        assert max(int(k) for k in engine.metrics()["batch_sizes"]) == 4, "one shared batch"
    finally:
        engine.close()
    expected = [_alone(m, tokenizer, p) for m, p in zip(merged, PROMPTS[:3], strict=True)]
    expected.append(_alone(base, tokenizer, PROMPTS[3]))
    assert batched == expected
    assert len(set(batched[:3])) == 3, "the adapters change the output"


def test_adapter_logits_match_merging_in_one_mixed_pass(
    adapters: tuple[Any, Any, dict[str, str], list],
) -> None:
    from cobalt.llm._llama import FastLlama

    base, _, folders, merged = adapters
    fast = FastLlama(base, "fp32")
    fast.load_adapters(folders)
    ids = torch.randint(0, 400, (4, 9), generator=torch.Generator().manual_seed(3))
    rows = torch.tensor([2, 0, 3, 1])
    with torch.inference_mode():
        logits = fast(input_ids=ids, adapters=rows).logits
        for r, adapter in enumerate(rows.tolist()):
            reference = (merged[adapter - 1] if adapter else base)(input_ids=ids[r : r + 1])
            assert torch.allclose(logits[r], reference.logits[0], atol=1e-4)


def test_the_prefix_cache_is_kept_per_adapter(
    adapters: tuple[Any, Any, dict[str, str], list],
) -> None:
    base, tokenizer, folders, _ = adapters
    prompt = "A long shared system prompt, then a question"
    engine = ct.llm.Engine(base, tokenizer, adapters=folders)
    try:
        first = engine.generate(prompt, max_tokens=6, temperature=0, adapter="style-1")
        other = engine.generate(prompt, max_tokens=6, temperature=0)
        again = engine.generate(prompt, max_tokens=6, temperature=0, adapter="style-1")
    finally:
        engine.close()
    assert other.cached_prompt_tokens == 0, "the base never reads an adapter's keys and values"
    assert again.cached_prompt_tokens > 0 and again.token_ids == first.token_ids
    assert other.token_ids == _alone(base, tokenizer, prompt)[:6]


def test_a_view_and_the_openai_model_field_choose_the_adapter(
    adapters: tuple[Any, Any, dict[str, str], list],
) -> None:
    base, tokenizer, folders, _ = adapters
    engine = ct.llm.Engine(base, tokenizer, adapters=folders, name="base")
    server = OpenAIServer(engine, engine.name)

    async def post(route: Any, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        answer = await route(RawRequest("POST", "/v1/x", json.dumps(body).encode()))
        return answer.status, json.loads(answer.body)

    async def main() -> None:
        models = json.loads((await server.models(RawRequest("GET", "/v1/models", b""))).body)
        assert [m["id"] for m in models["data"]] == ["base", *folders]
        assert all(m["parent"] == "base" for m in models["data"][1:])
        status, answer = await post(
            server.completions,
            {"model": "style-2", "prompt": PROMPTS[0], "max_tokens": 8, "temperature": 0},
        )
        assert status == 200 and answer["model"] == "style-2"
        view = engine.with_adapter("style-2")
        assert (
            answer["choices"][0]["text"]
            == view.generate(PROMPTS[0], max_tokens=8, temperature=0).text
        )
        status, answer = await post(server.completions, {"model": "style-9", "prompt": "x"})
        assert status == 404 and "'style-9' is not served" in answer["error"]["message"]
        status, answer = await post(server.embeddings, {"model": "style-0", "input": "x"})
        assert status == 404 and "LoRA adapter" in answer["error"]["message"]

    try:
        asyncio.run(main())
    finally:
        engine.close()


def test_train_lora_learns_and_the_engine_serves_what_it_saved(tmp_path: Path) -> None:
    base, tokenizer = ct.llm.random_model(seed=0)
    examples = [{"prompt": "Q: colour?", "completion": " A: blue blue blue"}] * 3
    trained = ct.llm.train_lora(
        base, examples, tmp_path / "blue", tokenizer=tokenizer, steps=30, learning_rate=1e-2
    )
    assert trained.steps == 30 and trained.last_loss < trained.first_loss / 1.2
    assert "30 steps" in str(trained)
    engine = ct.llm.Engine(base, tokenizer, adapters={"blue": trained.path})
    try:
        done = engine.generate("Q: colour?", max_tokens=6, temperature=0, adapter="blue")
        tuned, engine_ids = done.text, done.token_ids
        plain = engine.generate("Q: colour?", max_tokens=6, temperature=0).text
    finally:
        engine.close()
    assert tuned != plain
    saved = peft.PeftModel.from_pretrained(copy.deepcopy(base), trained.path).merge_and_unload()
    assert engine_ids == _alone(saved, tokenizer, "Q: colour?")[:6], "served as peft loads it"
    before = ct.llm.random_model(seed=0)[0]
    assert all(
        torch.equal(a, b) for a, b in zip(base.parameters(), before.parameters(), strict=True)
    ), "train_lora trains a copy; the model passed in is unchanged"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"rank": 0}, "rank must be a whole number"),
        ({"steps": 1.5}, "steps must be a whole number"),
        ({"learning_rate": float("nan")}, "learning_rate must be a positive"),
        ({"targets": ["lm_head"]}, "targets takes projections"),
        ({"examples": []}, "non-empty list"),
        ({"examples": [{"prompt": "x"}]}, r"examples\[0\]"),
        ({"examples": "just a string"}, "non-empty list"),
        ({"tokenizer": None}, "needs its tokenizer"),
    ],
)
def test_train_lora_refuses_bad_arguments(
    tmp_path: Path, options: dict[str, Any], message: str
) -> None:
    base, tokenizer = ct.llm.random_model(seed=0)
    arguments: dict[str, Any] = {"tokenizer": tokenizer, "steps": 1, **options}
    examples = arguments.pop("examples", ["a b c"])
    with pytest.raises(ct.SpecError, match=message):
        ct.llm.train_lora(base, examples, tmp_path / "out", **arguments)


def test_train_lora_never_writes_into_a_folder_of_other_files(tmp_path: Path) -> None:
    base, tokenizer = ct.llm.random_model(seed=0)
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ct.SpecError, match="holds other files"):
        ct.llm.train_lora(base, ["a b c"], tmp_path, tokenizer=tokenizer, steps=1)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def _rewrite(folder: Path, source: str, edit: Any) -> str:
    """A copy of adapter ``source`` with ``edit(config, tensors)`` applied."""
    from safetensors.torch import load_file, save_file

    config = json.loads((Path(source) / "adapter_config.json").read_text())
    tensors = load_file(str(Path(source) / "adapter_model.safetensors"))
    edit(config, tensors)
    folder.mkdir()
    (folder / "adapter_config.json").write_text(json.dumps(config))
    save_file(tensors, str(folder / "adapter_model.safetensors"))
    return str(folder)


def _first_b(tensors: dict[str, Any]) -> str:
    return next(k for k in tensors if "lora_B" in k)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c, t: c.update(use_dora=True), "uses DoRA"),
        (lambda c, t: c.update(peft_type="IA3"), "not a LoRA adapter"),
        (lambda c, t: c.update(bias="all"), "trains biases"),
        (lambda c, t: c.update(lora_alpha="big"), "lora_alpha must be a positive"),
        (lambda c, t: t.update({_first_b(t): t[_first_b(t)][:-1]}), "trained on another"),
        (lambda c, t: t.update({_first_b(t): t[_first_b(t)] * float("nan")}), "NaN"),
        (lambda c, t: t.pop(_first_b(t)), "has only lora_A"),
        (
            lambda c, t: t.update(
                {"base_model.model.lm_head.lora_A.weight": t[_first_b(t)].clone()}
            ),
            "not a LoRA A or B",
        ),
        (
            lambda c, t: t.update(
                {k.replace("layers.0.", "layers.99."): v.clone() for k, v in list(t.items())}
            ),
            "changes layer 99",
        ),
    ],
)
def test_adapter_files_are_checked_before_they_are_served(
    adapters: tuple[Any, Any, dict[str, str], list], tmp_path: Path, edit: Any, message: str
) -> None:
    base, tokenizer, folders, _ = adapters
    broken = _rewrite(tmp_path / "broken", folders["style-1"], edit)
    with pytest.raises(ct.SpecError, match=message):
        ct.llm.Engine(base, tokenizer, adapters={"broken": broken})


def test_engine_refuses_bad_adapter_arguments(
    adapters: tuple[Any, Any, dict[str, str], list], tmp_path: Path
) -> None:
    base, tokenizer, folders, _ = adapters
    first = folders["style-0"]
    with pytest.raises(ct.SpecError, match="mapping of names"):
        ct.llm.Engine(base, tokenizer, adapters=[first])  # type: ignore[arg-type]
    with pytest.raises(ct.SpecError, match="name"):
        ct.llm.Engine(base, tokenizer, adapters={"../etc": first})
    with pytest.raises(ct.SpecError, match="as the base model is"):
        ct.llm.Engine(base, tokenizer, name="same", adapters={"same": first})
    with pytest.raises(ct.SpecError, match=r"no adapter_config\.json"):
        ct.llm.Engine(base, tokenizer, adapters={"empty": str(tmp_path)})
    with pytest.raises(ct.SpecError, match="takes the path of a folder"):
        ct.llm.Engine(base, tokenizer, adapters={"n": 3})  # type: ignore[dict-item]
    engine = ct.llm.Engine(base, tokenizer, adapters={"one": first})
    try:
        with pytest.raises(ct.SpecError, match="'two' is not served by this engine"):
            engine.generate("Hi", max_tokens=2, adapter="two")
        with pytest.raises(ct.SpecError, match="'two' is not served by this engine"):
            engine.with_adapter("two")
        assert "adapters=['one']" in repr(engine)
    finally:
        engine.close()


def test_adapters_on_a_model_without_the_fast_path_say_how_to_serve_them(
    adapters: tuple[Any, Any, dict[str, str], list],
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    _, tokenizer, folders, _ = adapters
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=512))
    with pytest.raises(ct.SpecError, match="merge_and_unload"):
        ct.llm.Engine(gpt2, tokenizer, adapters=folders)
