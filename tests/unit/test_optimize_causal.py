"""``ct.optimize`` on a causal LM: prefill, decode-step latency and next-token agreement.

On the tiny random Llama of ``ct.llm.random_model``. Its timings are of a busy
2-core machine, so the tests check which figures there are and how the report
reads them, never which model was faster.
"""

from __future__ import annotations

import copy
import importlib.util
from collections.abc import Callable, Iterator
from typing import Any

import pytest

import cobalt as ct
from cobalt._optimize_report import CausalLMFigures

pytestmark = pytest.mark.unit

HAVE_TRANSFORMERS = all(importlib.util.find_spec(m) for m in ("torch", "transformers"))
if HAVE_TRANSFORMERS:
    import torch
    from transformers import LlamaForCausalLM
    from transformers.modeling_outputs import CausalLMOutputWithPast

    from cobalt import _optimize_causal, _optimize_int8, _optimize_torch

    class _NoCacheForCausalLM(LlamaForCausalLM):
        """A causal LM whose forward never returns its KV cache."""

        def forward(self, *args: Any, **kwargs: Any) -> Any:
            return CausalLMOutputWithPast(logits=super().forward(*args, **kwargs).logits)

    class _NoUseCacheForCausalLM(LlamaForCausalLM):
        """A causal LM whose forward takes input_ids and attention_mask, nothing else."""

        def forward(self, input_ids: Any, attention_mask: Any = None) -> Any:
            return super().forward(input_ids=input_ids, attention_mask=attention_mask)


def _report(figures: CausalLMFigures | None = None) -> ct.OptimizationReport:
    return ct.OptimizationReport(
        quantize="int8",
        sparsity=0.0,
        compiled=False,
        applied=(),
        skipped=(),
        size_bytes_before=4000,
        size_bytes_after=1000,
        fidelity_source="evaluation",
        evaluation_items=2,
        causal_lm=figures,
    )


@pytest.fixture(autouse=True)
def _transformers(
    requires_service: Callable[..., None], monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    requires_service("PyTorch and transformers", HAVE_TRANSFORMERS, "scripts/bootstrap dev,models")
    # fast tests: one timed pass, one prefill per prompt in it, continuations of 4 tokens
    monkeypatch.setattr(_optimize_torch, "TIMED_BUDGET_S", 0.0)
    monkeypatch.setattr(_optimize_causal, "PREFILL_REPEATS", 1)
    monkeypatch.setattr(_optimize_causal, "GREEDY_TOKENS", 4)
    # One thread: the tiny model's many small passes took 25x longer on two threads
    # while another process kept both cores of the machine busy.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def llm() -> tuple[Any, Any]:
    if not HAVE_TRANSFORMERS:
        pytest.skip("PyTorch and transformers are not installed")
    return ct.llm.random_model(seed=0)


@pytest.fixture(scope="module")
def prompts(llm: tuple[Any, Any]) -> list[dict[str, Any]]:
    """Two held-out inputs: a padded batch of two prompts, and one prompt alone."""
    _, tokenizer = llm
    batch = ["what is the weather like today", "hello"]
    return [
        dict(tokenizer(batch, return_tensors="pt", padding=True)),
        dict(tokenizer("def main(): return", return_tensors="pt")),
    ]


def test_a_causal_lm_report_gives_prefill_decode_step_and_agreement_separately(
    llm: tuple[Any, Any], prompts: list[dict[str, Any]]
) -> None:
    model, _ = llm
    _, report = ct.optimize(model, evaluation=prompts)

    figures = report.causal_lm
    assert figures is not None
    assert figures.prompts == 3, "each row of each input is a prompt"
    positions = sum(int(p["attention_mask"].sum()) for p in prompts)
    assert figures.positions == positions, "padding is left out"
    assert figures.prefill_ms_before and figures.prefill_ms_after
    assert figures.decode_ms_before and figures.decode_ms_after
    assert figures.decode_steps == 3 * 3, "3 prompts, each its first token then 3 steps"
    assert (figures.greedy_prompts, figures.greedy_tokens) == (3, 4)
    assert report.latency_ms_before is None, "a whole-input pass is not serving speed"
    text = str(report)
    for row in (
        "prefill (median of 3)",
        "decode step (median of 9)",
        "next-token agreement (held-out)",
        "greedy 4 tokens (held-out)",
        "speed: decode step ",
    ):
        assert row in text
    assert "latency (median" not in text and "decode latency" not in text
    assert "speed: decode step" in report._repr_html_()


def test_an_unchanged_copy_agrees_on_every_next_token_and_continuation(
    llm: tuple[Any, Any], prompts: list[dict[str, Any]]
) -> None:
    model, _ = llm
    _, report = ct.optimize(model, sparsity=0.0, evaluation=prompts)

    figures = report.causal_lm
    assert figures is not None
    assert figures.next_token_agreement == 1.0
    assert figures.greedy_agreement == 1.0
    assert figures.greedy_identical == figures.greedy_prompts == 3
    assert "3 of 3 identical" in str(report)


def test_the_headline_speedup_of_a_causal_lm_is_the_decode_step_ratio(
    llm: tuple[Any, Any], prompts: list[dict[str, Any]]
) -> None:
    model, _ = llm
    _, report = ct.optimize(model, quantize="bf16", evaluation=prompts)

    figures = report.causal_lm
    assert figures is not None and figures.decode_ms_before and figures.decode_ms_after
    ratio = figures.decode_ms_before / figures.decode_ms_after
    assert report.speedup == pytest.approx(ratio)
    assert report.speedup == figures.decode_speedup
    assert f"speed: decode step {ratio:.2f}x: " in str(report)
    assert figures.next_token_agreement is not None and 0 < figures.next_token_agreement <= 1


def test_a_slower_decode_step_is_called_slower_even_when_the_prefill_is_faster() -> None:
    figures = CausalLMFigures(
        prompts=2,
        prefill_ms_before=20.0,
        prefill_ms_after=10.0,
        positions=12,
        next_token_agreement=0.75,
        decode_ms_before=4.0,
        decode_ms_after=5.0,
        decode_steps=30,
        greedy_prompts=2,
        greedy_tokens=16,
        greedy_agreement=0.5,
        greedy_identical=0,
    )
    report = _report(figures)
    text = str(report)

    assert report.speedup == pytest.approx(0.8)
    assert "speed: decode step 0.80x: slower (generation speed), prefill 2.00x: faster" in text
    assert "1.25x slower" in text and "2.00x faster" in text
    assert "0.7500" in text and "0 of 2 identical" in text


@pytest.mark.parametrize("kernel", ["per-token", "torch dynamic"])
def test_int8_copies_of_a_causal_lm_decode_on_the_kv_cache(
    llm: tuple[Any, Any],
    prompts: list[dict[str, Any]],
    kernel: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if kernel == "per-token" and not _optimize_int8.int_mm_available():
        pytest.skip("torch._int_mm does not run on this build of torch")
    if kernel == "torch dynamic":
        monkeypatch.setattr(_optimize_int8, "int_mm_available", lambda: False)
    model, _ = llm
    small, report = ct.optimize(model, quantize="int8", evaluation=prompts)

    layer = "PerTokenInt8Linear" if kernel == "per-token" else "DynamicQuantizedLinear"
    assert any(m._get_name() == layer for m in small.modules())
    figures = report.causal_lm
    assert figures is not None
    assert figures.decode_ms_after is not None and figures.decode_steps > 0
    assert figures.next_token_agreement is not None and figures.greedy_agreement is not None
    assert not any(note.startswith("decode step") for note in report.skipped)


def test_a_model_that_returns_no_kv_cache_gets_no_decode_figure_and_no_speedup(
    llm: tuple[Any, Any], prompts: list[dict[str, Any]]
) -> None:
    model = copy.deepcopy(llm[0])
    model.__class__ = _NoCacheForCausalLM
    _, report = ct.optimize(model, quantize="bf16", evaluation=prompts)

    figures = report.causal_lm
    assert figures is not None
    assert figures.decode_ms_before is None and figures.decode_ms_after is None
    assert report.speedup is None
    assert figures.prefill_ms_after is not None and figures.next_token_agreement is not None
    assert "decode step of the original model: not measured, a one-token step on the " in (
        "\n".join(report.skipped)
    )
    assert "it returned no KV cache with use_cache=True" in str(report)
    assert "decode step not measured (see skipped), so no speedup is given" in str(report)
    assert "decode step (median" not in str(report)


def test_a_model_that_refuses_use_cache_gets_no_figure_but_agreement_and_says_why(
    llm: tuple[Any, Any], prompts: list[dict[str, Any]]
) -> None:
    model = copy.deepcopy(llm[0])
    model.__class__ = _NoUseCacheForCausalLM
    _, report = ct.optimize(model, quantize="bf16", evaluation=prompts)

    figures = report.causal_lm
    assert figures is not None
    assert figures.prefill_ms_before is None and figures.decode_ms_before is None
    assert figures.next_token_agreement is None and report.speedup is None
    assert report.fidelity is not None, "the whole-pass fidelity is still measured"
    notes = "\n".join(report.skipped)
    assert "prefill and decode step of the original model: not measured, a prefill with " in notes
    assert "use_cache=True failed (TypeError: " in notes
    assert "prefill (median of 3)" in str(report), "the row is there, with no figures"


def test_a_causal_lm_measured_without_token_ids_says_why_and_gives_no_latency(
    llm: tuple[Any, Any],
) -> None:
    model, _ = llm
    embeds = [{"inputs_embeds": torch.randn(1, 5, model.config.hidden_size)}]
    _, report = ct.optimize(model, quantize="bf16", evaluation=embeds)

    assert report.causal_lm is None
    assert report.speedup is None and report.latency_ms_before is None
    assert report.fidelity is not None, "the fidelity is still measured"
    (note,) = report.skipped
    assert note.startswith("causal LM figures: evaluation[0] has no input_ids")
    assert "tokenizer(text, return_tensors='pt')" in note


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ("floats", r"evaluation\[0\]: input_ids is a float32 tensor, and a causal LM reads"),
        ("list", r"evaluation\[0\]: input_ids is a list, not a tensor; pass the tokenizer's"),
        ("1-D", r"evaluation\[0\]: input_ids has shape \(4,\), and a causal LM takes"),
        ("too large", r"token id 5000 is outside the model's vocabulary of \d+ \(0 to"),
        ("masked", r"evaluation\[0\] row 0: its attention_mask is all 0"),
    ],
)
def test_a_causal_lm_refuses_token_ids_it_cannot_read(
    llm: tuple[Any, Any], item: str, message: str
) -> None:
    ids = torch.tensor([[5, 6, 7, 8]])
    inputs: Any = {
        "floats": torch.randn(1, 4, 8),
        "list": {"input_ids": [[5, 6, 7, 8]]},
        "1-D": ids[0],
        "too large": {"input_ids": torch.tensor([[5, 5000]])},
        "masked": {"input_ids": ids, "attention_mask": torch.zeros_like(ids)},
    }[item]
    with pytest.raises(ct.SpecError, match=message):
        ct.optimize(llm[0], quantize="int8", evaluation=[inputs])


def test_calibration_token_ids_are_checked_too(
    llm: tuple[Any, Any], prompts: list[dict[str, Any]]
) -> None:
    with pytest.raises(ct.SpecError, match=r"calibration\[1\]: input_ids is a float32 tensor"):
        ct.optimize(
            llm[0], quantize="int8", calibration=[prompts[1], torch.randn(1, 4)], evaluation=prompts
        )


def test_only_a_model_that_generates_gets_causal_lm_figures() -> None:
    _, report = ct.optimize(torch.nn.Linear(4, 4), quantize="int8", calibration=[torch.randn(2, 4)])

    assert report.causal_lm is None and report.latency_ms_before is not None
    assert "decode step" not in str(report) and "causal LM" not in str(report)


def test_the_cache_goes_in_the_argument_the_forward_names() -> None:
    class Old(torch.nn.Module):
        def forward(self, input_ids: Any, past_key_values: Any = None) -> Any:
            return input_ids

    class New(torch.nn.Module):
        def forward(self, input_ids: Any, cache: Any = None) -> Any:
            return input_ids

    assert _optimize_causal.cache_argument(Old()) == "past_key_values"
    assert _optimize_causal.cache_argument(New()) == "cache"
