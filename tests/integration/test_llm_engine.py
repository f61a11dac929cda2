"""ct.llm.Engine on a real (seeded, random-weight) Llama: exactness, sampling, stops, faults.

The exactness tests are the issue's: continuous batching and speculative
decoding must give each request exactly the greedy tokens it gets alone.
"""

from __future__ import annotations

import asyncio
import threading
import time
import warnings
from collections.abc import Iterator

import pytest
from support import wait_for

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import cobalt as ct  # noqa: E402
from cobalt.llm import Completion, Engine, random_model  # noqa: E402

warnings.filterwarnings("ignore", message=".*quantize_per_channel.*")

PROMPTS = [f"request {i}: " + "the quick brown fox " * (i % 5) + str(i) for i in range(12)]


@pytest.fixture(scope="module")
def lm() -> tuple[object, object]:
    return random_model("tiny", seed=0)


@pytest.fixture
def engine(lm: tuple[object, object]) -> Iterator[Engine]:
    model, tokenizer = lm
    e = Engine(model, tokenizer, prefix_cache=False)
    yield e
    e.close()


@pytest.fixture(scope="module")
def alone(lm: tuple[object, object]) -> list[tuple[int, ...]]:
    """Each prompt's greedy tokens when it runs by itself."""
    model, tokenizer = lm
    e = Engine(model, tokenizer, prefix_cache=False)
    try:
        return [e.generate(p, max_tokens=24, temperature=0).token_ids for p in PROMPTS]
    finally:
        e.close()


def test_greedy_matches_transformers_generate(lm: tuple[object, object], engine: Engine) -> None:
    model, tokenizer = lm
    ids = tokenizer(PROMPTS[3], return_tensors="pt")["input_ids"]
    reference = model.generate(  # type: ignore[attr-defined]
        ids, max_new_tokens=20, do_sample=False, eos_token_id=None, pad_token_id=0
    )[0, ids.shape[1] :].tolist()
    out = engine.generate(PROMPTS[3], max_tokens=20, temperature=0)
    assert list(out.token_ids) == reference[: len(out.token_ids)]
    assert out.finish_reason == "length" or len(out.token_ids) < 20


def _concurrently(engine: Engine, prompts: list[str], **sampling: object) -> list[Completion]:
    """Each prompt from its own thread, arriving a little apart, so batches change as they run."""
    results: list[Completion | None] = [None] * len(prompts)

    def one(i: int) -> None:
        time.sleep(0.004 * i)
        results[i] = engine.generate(prompts[i], **sampling)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(r is not None for r in results)
    return results  # type: ignore[return-value]


def test_continuous_batching_gives_each_request_its_greedy_tokens(
    engine: Engine, alone: list[tuple[int, ...]]
) -> None:
    results = _concurrently(engine, PROMPTS, max_tokens=24, temperature=0)
    assert [r.token_ids for r in results] == alone
    sizes = {int(k) for k in engine.metrics()["batch_sizes"]}
    assert max(sizes) > 1, "requests never shared a step"


@pytest.mark.parametrize("k", [1, 3, 5])
def test_speculative_greedy_is_token_for_token_greedy(
    lm: tuple[object, object], alone: list[tuple[int, ...]], k: int
) -> None:
    model, tokenizer = lm
    e = Engine(model, tokenizer, draft="int8", speculative_tokens=k, prefix_cache=False)
    try:
        assert [
            e.generate(p, max_tokens=24, temperature=0).token_ids for p in PROMPTS[:4]
        ] == alone[:4]
        batched = _concurrently(e, PROMPTS, max_tokens=24, temperature=0)
        assert [r.token_ids for r in batched] == alone
        spec = e.metrics()["speculative"]
        assert spec["proposed"] > 0 and 0 < spec["acceptance_rate"] <= 1
    finally:
        e.close()


def test_speculation_pauses_for_large_batches_and_resumes_exactly(
    lm: tuple[object, object], alone: list[tuple[int, ...]]
) -> None:
    """Above speculative_max_batch rows the steps are plain; when the batch shrinks the
    draft catches up on every token it missed, and output stays exact throughout."""
    model, tokenizer = lm
    e = Engine(model, tokenizer, draft="int8", speculative_max_batch=3, prefix_cache=False)
    try:
        batched = _concurrently(e, PROMPTS, max_tokens=24, temperature=0)
        assert [r.token_ids for r in batched] == alone
        assert max(int(k) for k in e.metrics()["batch_sizes"]) > 3
        before = e.metrics()["speculative"]["proposed"]
        assert e.generate(PROMPTS[5], max_tokens=24, temperature=0).token_ids == alone[5]
        assert e.metrics()["speculative"]["proposed"] > before
    finally:
        e.close()


def test_speculative_with_a_disagreeing_draft_is_still_exact(
    lm: tuple[object, object], alone: list[tuple[int, ...]]
) -> None:
    """A draft with other weights is mostly rejected, which exercises the rollback."""
    model, tokenizer = lm
    draft, _ = random_model("tiny", seed=1)
    e = Engine(model, tokenizer, draft=draft, speculative_tokens=3, prefix_cache=False)
    try:
        batched = _concurrently(e, PROMPTS, max_tokens=24, temperature=0)
        assert [r.token_ids for r in batched] == alone
        assert e.metrics()["speculative"]["acceptance_rate"] < 0.5
    finally:
        e.close()


def test_prefix_cache_reuses_a_shared_start_without_changing_output(
    lm: tuple[object, object],
) -> None:
    model, tokenizer = lm
    system = "You are a helpful assistant. Answer briefly and precisely. " * 3
    plain = Engine(model, tokenizer, prefix_cache=False)
    cached = Engine(model, tokenizer)
    try:
        first = cached.generate(system + "first question", max_tokens=12, temperature=0)
        second = cached.generate(system + "second question", max_tokens=12, temperature=0)
        assert first.cached_prompt_tokens == 0
        assert second.cached_prompt_tokens >= len(tokenizer(system)["input_ids"]) - 2  # type: ignore[operator]
        expected = plain.generate(system + "second question", max_tokens=12, temperature=0)
        assert second.token_ids == expected.token_ids
        assert cached.metrics()["cached_prompt_tokens"] == second.cached_prompt_tokens
    finally:
        plain.close()
        cached.close()


def test_stream_pieces_add_up_and_stop_strings_cut_the_text(engine: Engine) -> None:
    full = engine.generate(PROMPTS[1], max_tokens=40, temperature=0)
    chunks = list(engine.stream(PROMPTS[1], max_tokens=40, temperature=0))
    assert "".join(c.text for c in chunks) == full.text
    assert sum(len(c.token_ids) for c in chunks) == full.completion_tokens
    assert chunks[-1].finish_reason == full.finish_reason
    assert all(c.finish_reason is None for c in chunks[:-1])
    text = full.text.replace("\ufffd", "")
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop
    stopped = engine.generate(PROMPTS[1], max_tokens=40, temperature=0, stop=[stop])
    assert stopped.finish_reason == "stop"
    assert stop not in stopped.text
    assert full.text.replace("\ufffd", "").startswith(stopped.text.replace("\ufffd", ""))


def test_sampling_is_repeatable_with_a_seed_and_top_p_near_zero_is_greedy(
    engine: Engine, alone: list[tuple[int, ...]]
) -> None:
    a = engine.generate(PROMPTS[2], max_tokens=16, temperature=1.0, seed=7)
    b = _concurrently(engine, [PROMPTS[2]] * 4, max_tokens=16, temperature=1.0, seed=7)
    assert all(r.token_ids == a.token_ids for r in b)
    other = engine.generate(PROMPTS[2], max_tokens=16, temperature=1.0, seed=8)
    assert other.token_ids != a.token_ids
    narrow = engine.generate(PROMPTS[2], max_tokens=24, temperature=1.0, top_p=1e-6, seed=1)
    assert narrow.token_ids == alone[2]


def test_speculative_sampling_runs_and_is_seeded(lm: tuple[object, object]) -> None:
    model, tokenizer = lm
    e = Engine(model, tokenizer, draft="int8", speculative_tokens=3)
    try:
        a = e.generate(PROMPTS[0], max_tokens=20, temperature=0.8, top_p=0.9, seed=3)
        b = e.generate(PROMPTS[0], max_tokens=20, temperature=0.8, top_p=0.9, seed=3)
        assert a.token_ids == b.token_ids and a.completion_tokens == 20
    finally:
        e.close()


def test_a_reader_that_stops_early_frees_its_row(engine: Engine) -> None:
    stream = engine.stream(PROMPTS[0], max_tokens=500, temperature=0)
    next(stream)
    stream.close()
    out = engine.generate(PROMPTS[1], max_tokens=5, temperature=0)
    assert out.completion_tokens == 5
    wait_for(lambda: not engine._runner._running, timeout=5, what="the runner to be idle")


def test_async_generation(engine: Engine, alone: list[tuple[int, ...]]) -> None:
    async def main() -> tuple[list[Completion], str]:
        many = await asyncio.gather(
            *(engine.agenerate(p, max_tokens=24, temperature=0) for p in PROMPTS[:5])
        )
        text = ""
        async for chunk in engine.astream(PROMPTS[0], max_tokens=24, temperature=0):
            text += chunk.text
        return list(many), text

    many, text = asyncio.run(main())
    assert [c.token_ids for c in many] == alone[:5]
    assert text == many[0].text


def test_metrics_count_requests_tokens_and_latencies(engine: Engine) -> None:
    _concurrently(engine, PROMPTS[:6], max_tokens=8, temperature=0)
    m = engine.metrics()
    assert m["kind"] == "text" and m["requests"] == 6
    assert m["generated_tokens"] <= 48 and m["generated_tokens"] > 6
    assert m["time_to_first_token"]["count"] == 6
    assert m["inter_token"]["count"] > 0
    assert m["busy_s"] > 0


def test_chat_prompt_uses_the_template(engine: Engine) -> None:
    prompt = engine.chat_prompt([{"role": "user", "content": "hi"}])
    assert prompt.endswith("<|assistant|>\n") and "hi" in prompt


def test_embeddings_from_the_language_model(engine: Engine) -> None:
    vectors = engine.embed(["one text", "and another, longer text"])
    assert len(vectors) == 2 and len(vectors[0]) == 256
    assert abs(sum(x * x for x in vectors[0]) - 1) < 1e-4


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"max_tokens": 0}, "max_tokens must be a whole number"),
        ({"temperature": -1}, "temperature must be a finite number"),
        ({"top_p": 1.5}, "top_p must be in (0, 1]"),
        ({"stop": [""]}, "stop must be a string"),
        ({"seed": "x"}, "seed must be a whole number"),
    ],
)
def test_bad_sampling_settings_are_refused(
    engine: Engine, sampling: dict[str, object], message: str
) -> None:
    with pytest.raises(ct.SpecError, match=message.replace("(", r"\(").replace("]", r"\]")):
        engine.generate("hi", **sampling)


def test_bad_prompts_and_options_are_refused(lm: tuple[object, object], engine: Engine) -> None:
    model, tokenizer = lm
    with pytest.raises(ct.SpecError, match="prompt is empty"):
        engine.generate([])
    with pytest.raises(ct.SpecError, match="token ids"):
        engine.generate([1, 10**9])
    with pytest.raises(ct.SpecError, match="reads at most"):
        engine.generate(list(range(5)) * 1000)
    with pytest.raises(ct.SpecError, match="backend must be"):
        Engine(model, tokenizer, backend="tpu")  # type: ignore[arg-type]
    with pytest.raises(ct.SpecError, match="speculative_tokens"):
        Engine(model, tokenizer, speculative_tokens=0)
    with pytest.raises(ct.SpecError, match="tokenizer"):
        Engine(model)
    with pytest.raises(ct.SpecError, match="no model folder"):
        Engine("/nonexistent/model")
    try:
        import vllm  # noqa: F401
    except ImportError:
        with pytest.raises(ct.SpecError, match="needs the vllm package"):
            Engine(model, tokenizer, backend="vllm")
    bigger, _ = random_model("tiny", seed=0)
    bigger.resize_token_embeddings(len(tokenizer) + 8)  # type: ignore[attr-defined]
    with pytest.raises(ct.SpecError, match="draft must share the tokenizer"):
        Engine(model, tokenizer, draft=bigger)
    # the engine that refused requests still serves
    assert engine.generate("hi", max_tokens=2, temperature=0).completion_tokens == 2


def test_prompt_lookup_speculation_is_exact_and_pays_on_repetitive_text(
    lm: tuple[object, object], alone: list[tuple[int, ...]]
) -> None:
    """draft="ngram" needs no second model; greedy output stays the target's, alone and
    batched, and a request that repeats text has its proposals accepted."""
    model, tokenizer = lm
    e = Engine(model, tokenizer, draft="ngram", prefix_cache=False)
    try:
        assert e.speculation == "ngram" and "speculation='ngram'" in repr(e)
        assert [
            e.generate(p, max_tokens=24, temperature=0).token_ids for p in PROMPTS[:4]
        ] == alone[:4]
        batched = _concurrently(e, PROMPTS, max_tokens=24, temperature=0)
        assert [r.token_ids for r in batched] == alone
        plain = Engine(model, tokenizer, prefix_cache=False)
        try:
            echo = plain.generate("one two three four " * 6, max_tokens=40, temperature=0)
        finally:
            plain.close()
        before = e.metrics().get("speculative", {}).get("accepted", 0)
        again = e.generate("one two three four " * 6, max_tokens=40, temperature=0)
        assert again.token_ids == echo.token_ids
        assert e.metrics()["speculative"]["accepted"] > before
        sampled = e.generate(PROMPTS[0], max_tokens=16, temperature=0.9, seed=5)
        assert sampled.completion_tokens == 16
    finally:
        e.close()
