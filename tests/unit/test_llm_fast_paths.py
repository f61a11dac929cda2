"""The CPU serving path's parts: weight formats, the fast Llama forward, the in-place cache,
and prompt-lookup speculation with its gate."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

import cobalt as ct  # noqa: E402
from cobalt.llm._backend import checked_name, model_name  # noqa: E402
from cobalt.llm._kv import BatchKV, GrowingLayer, growing_cache  # noqa: E402
from cobalt.llm._llama import FastLlama, unsupported  # noqa: E402
from cobalt.llm._lookup import Gate, NgramIndex, RowStats, lookup_step  # noqa: E402
from cobalt.llm._sequence import Sequence  # noqa: E402
from cobalt.llm._stats import Stats  # noqa: E402
from cobalt.llm._types import SamplingParams  # noqa: E402
from cobalt.llm._weights import DEQUANTIZE_ROWS, PackedLinear, checked_format  # noqa: E402

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def tiny() -> tuple[object, object]:
    model, tokenizer = ct.llm.random_model("tiny", seed=0)
    model.eval()  # type: ignore[attr-defined]
    return model, tokenizer


@pytest.mark.parametrize(
    ("fmt", "tolerance"), [("fp32", 1e-6), ("bf16", 0.01), ("int8", 0.02), ("int4", 0.15)]
)
def test_each_weight_format_multiplies_close_to_fp32(fmt: str, tolerance: float) -> None:
    torch.manual_seed(0)
    weight, x = torch.randn(96, 128), torch.randn(3, 5, 128)
    layer = PackedLinear.of(weight, checked_format(fmt))
    out, reference = layer(x), x @ weight.T
    assert out.shape == reference.shape and out.dtype == torch.float32
    assert float((out - reference).norm() / reference.norm()) < tolerance
    assert layer.fmt == fmt


def test_an_int8_prefill_multiplies_the_same_weights_in_fp32() -> None:
    """Many rows take fp32's kernels on the expanded int8 weight: the same quantized
    weights as the few-row kernel, with fp32 activations instead of bf16."""
    torch.manual_seed(0)
    weight = torch.randn(96, 128)
    layer = PackedLinear.of(weight, "int8")
    rows = torch.randn(DEQUANTIZE_ROWS, 128)
    quantized = layer.weight.float() * layer.scale.float()[:, None]
    assert torch.allclose(layer(rows), rows @ quantized.T, atol=1e-4)
    few = layer(rows[:4])  # the int8 kernel, bf16 activations
    assert float((few - rows[:4] @ quantized.T).norm() / few.norm()) < 0.01


def test_int4_falls_back_to_fp32_where_the_shape_does_not_suit_it() -> None:
    assert (
        PackedLinear.of(torch.randn(96, 100), "int4").fmt == "fp32"
    )  # 100 inputs: not groups of 32
    assert PackedLinear.of(torch.randn(90, 128), "int4").fmt == "fp32"  # 90 outputs: not 16s
    with pytest.raises(ct.SpecError, match="weights must be one of"):
        checked_format("int3")


def test_low_bit_formats_hold_fewer_bytes(tiny: tuple[object, object]) -> None:
    model, _ = tiny
    sizes = {fmt: FastLlama(model, fmt).weight_bytes() for fmt in ("fp32", "bf16", "int8", "int4")}
    assert sizes["fp32"] > sizes["bf16"] > sizes["int8"]
    assert sizes["int4"] < sizes["bf16"]


def test_fast_forward_matches_transformers_on_a_padded_batch_and_its_continuation(
    tiny: tuple[object, object],
) -> None:
    from transformers import DynamicCache

    model, _ = tiny
    fast = FastLlama(model, "fp32")
    ids = torch.tensor([[0, 0, 5, 6, 7, 8], [1, 2, 3, 4, 5, 6]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1] * 6])
    positions = (mask.cumsum(1) - 1).clamp(min=0)
    with torch.inference_mode():
        want = model(input_ids=ids, attention_mask=mask, position_ids=positions)  # type: ignore[operator]
        got = fast(input_ids=ids, attention_mask=mask, position_ids=positions)
        assert torch.allclose(got.logits[:, 2:], want.logits[:, 2:], atol=1e-4)
        assert not got.logits.isnan().any(), "padding rows must stay finite"
        theirs = model(input_ids=ids[1:], past_key_values=DynamicCache())  # type: ignore[operator]
        ours = fast(input_ids=ids[1:], past_key_values=DynamicCache())
        step = torch.tensor([[9]]), torch.tensor([[6]])
        a = model(input_ids=step[0], position_ids=step[1], past_key_values=theirs.past_key_values)  # type: ignore[operator]
        b = fast(input_ids=step[0], position_ids=step[1], past_key_values=ours.past_key_values)
        assert torch.allclose(a.logits, b.logits, atol=1e-4)
        assert fast(input_ids=ids, logits_to_keep=1).logits.shape[1] == 1


def test_models_the_fast_forward_cannot_run_are_named_with_the_reason(
    tiny: tuple[object, object],
) -> None:
    from transformers import GPT2Config, GPT2LMHeadModel

    model, tokenizer = tiny
    assert unsupported(model) is None
    gpt2 = GPT2LMHeadModel(GPT2Config(n_layer=1, n_embd=32, n_head=2, vocab_size=len(tokenizer)))  # type: ignore[arg-type]
    assert "gpt2" in str(unsupported(gpt2))
    engine = ct.llm.Engine(gpt2, tokenizer)  # fp32 runs through transformers instead
    try:
        assert (
            engine.fast is None
            and engine.generate("hi", max_tokens=2, temperature=0).completion_tokens == 2
        )
    finally:
        engine.close()
    with pytest.raises(ct.SpecError, match="needs a Llama-family model"):
        ct.llm.Engine(gpt2, tokenizer, weights="int8")


def test_growing_layer_appends_in_place_and_doubles_when_full() -> None:
    layer = GrowingLayer(torch.zeros(2, 3, 4, 8), torch.zeros(2, 3, 4, 8))
    keys, _ = layer.update(torch.ones(2, 3, 1, 8), torch.ones(2, 3, 1, 8))
    assert keys.shape == (2, 3, 5, 8) and float(keys[:, :, -1].sum()) == 48
    buffer = layer._keys
    for _ in range(10):
        layer.update(torch.ones(2, 3, 1, 8), torch.ones(2, 3, 1, 8))
    assert layer._keys is buffer, "appends that fit must not copy the cache"
    assert layer.get_seq_length() == 15 and layer.keys.shape[2] == 15
    layer.keys, layer.values = torch.zeros(1, 3, 2, 8), torch.zeros(1, 3, 2, 8)
    assert layer.keys.shape == (1, 3, 2, 8) and layer.values.shape == (1, 3, 2, 8)


def test_batch_kv_keeps_rows_and_compacts_on_a_growing_cache() -> None:
    kv = BatchKV.empty()
    kv.add_rows([[(torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))]], lengths=[3])
    kv.add_rows([[(2 * torch.ones(1, 2, 5, 4), 2 * torch.ones(1, 2, 5, 4))]], lengths=[5])
    assert isinstance(kv.cache.layers[0], GrowingLayer)  # type: ignore[union-attr]
    kv.cache.layers[0].update(torch.zeros(2, 2, 1, 4), torch.zeros(2, 2, 1, 4))  # type: ignore[union-attr]
    kv.appended(1, torch.ones(2, dtype=torch.long))
    kv.keep_rows([1])
    keys = kv.layers()[0][0]
    assert keys.shape == (1, 2, 6, 4) and float(keys[0, 0, 0, 0]) == 2
    assert growing_cache([(keys, keys)]).get_seq_length() == 6


def test_ngram_index_proposes_what_followed_the_latest_longest_match() -> None:
    index = NgramIndex()
    index.extend([7, 1, 2, 3, 9, 1, 2, 4, 5, 1, 2])
    assert index.propose(2) == [4, 5]  # the latest "1 2" was followed by 4 5
    index.extend([3])
    assert index.propose(3) == [9, 1, 2]  # "1 2 3" beats the shorter "2 3" and "3"
    assert NgramIndex().propose(4) == []
    fresh = NgramIndex()
    fresh.extend([1, 2, 3])
    assert fresh.propose(4) == []
    run = NgramIndex()
    run.extend([5, 8, 8, 8])
    assert run.propose(3) == [8, 8, 8], "a run repeats its period past the tail"


def test_the_gate_verifies_the_number_of_proposals_that_pays_best() -> None:
    gate = Gate()
    good, bad = RowStats(rate=0.9), RowStats(rate=0.05)
    assert gate.choose([good], [[1, 2, 3, 4]]) == [[1, 2, 3, 4]]
    assert gate.choose([bad], [[1, 2, 3, 4]]) == [[]], "proposals that fail are not verified"
    gate.timed_plain(1, 0.010)
    gate.timed_verify(1, 5, 0.030)  # four extra columns cost twice a plain step: slope 0.5
    assert gate.slopes[1] == 0.5
    # expected tokens per unit of time: 1.27, 1.36, 1.38, 1.37 for one to four proposals
    assert gate.choose([good], [[1, 2, 3, 4]]) == [[1, 2, 3]]
    gate.timed_verify(1, 5, 0.250)
    assert gate.choose([RowStats(rate=0.9)], [[1, 2, 3, 4]]) == [[]], "too costly to pay at all"


def test_a_request_not_expected_to_pay_is_probed_with_one_proposal_less_often_each_time() -> None:
    gate = Gate()
    row = RowStats(rate=0.05)
    waits = []
    for _ in range(3):
        steps = 0
        while gate.choose([row], [[7, 8, 9]]) == [[]]:
            steps += 1
        waits.append(steps)
        assert gate.choose([row], [[7, 8, 9]]) == [[7]], "a probe checks one proposal"
        row.record(1, 0)
    assert waits == [8, 16, 32]
    row.record(1, 1)
    assert row.probe_every == 8 and row.rate > 0.05


def test_new_requests_start_from_the_acceptance_seen_so_far() -> None:
    gate = Gate()
    for _ in range(30):
        gate.observed(4, 0)
    assert gate.new_row().rate < 0.1
    assert gate.choose([gate.new_row()], [[1, 2, 3, 4]]) == [[]]


class _Counter:
    """A model whose next token is always the previous one plus one."""

    def __init__(self, vocab: int = 50) -> None:
        self.vocab = vocab

    def __call__(self, input_ids: torch.Tensor, **_: object) -> object:
        logits = torch.nn.functional.one_hot((input_ids + 1) % self.vocab, self.vocab).float()
        return type("Out", (), {"logits": logits * 10})()


def _sequence(tokens: list[int], **params: object) -> Sequence:
    sampling = SamplingParams.checked(max_tokens=64, **params)  # type: ignore[arg-type]
    return Sequence.new(
        tokens, sampling, lambda _: None, ct.llm.random_tokenizer(), frozenset(), 4096
    )


def test_lookup_step_keeps_the_agreeing_prefix_and_the_targets_own_token() -> None:
    kv = BatchKV(None, torch.ones(3, 4, dtype=torch.long), torch.full((3,), 4))
    rows = [_sequence([1, 2, 3, 4]) for _ in range(3)]
    proposals = [[6, 7, 9], [6], []]  # the counter says 6, 7, 8: row 0 keeps 2, row 1 keeps 1
    stats = Stats("text")
    emitted, following, kept = lookup_step(
        _Counter(), kv, torch.tensor([5, 5, 5]), rows, proposals, stats
    )
    assert emitted == [[6, 7, 8], [6, 7], [6]] and kept == [2, 1, 0]
    assert following.tolist() == [8, 7, 6]
    assert kv.lengths.tolist() == [7, 6, 5] and kv.columns == 8
    assert stats.proposed_tokens == 4 and stats.accepted_tokens == 3


def test_lookup_step_sampled_rows_keep_a_certain_proposal_and_draw_after_a_rejection() -> None:
    kv = BatchKV(None, torch.ones(1, 2, dtype=torch.long), torch.full((1,), 2))
    row = _sequence([1, 2], temperature=1.0, seed=3)
    emitted, _, kept = lookup_step(
        _Counter(), kv, torch.tensor([3]), [row], [[4, 9]], Stats("text")
    )
    assert kept == [1] and emitted[0][0] == 4 and emitted[0][1] != 9


def test_model_names_never_carry_a_path() -> None:
    assert model_name("/srv/models/SmolLM2-135M-Instruct.Q4_1.gguf") == "SmolLM2-135M-Instruct.Q4_1"
    assert model_name("/srv/models/my model/") == "my-model"
    assert checked_name("smollm2:int4") == "smollm2:int4"
    for bad in ("/etc/passwd", "../x", "", "a" * 200, "a b"):
        with pytest.raises(ct.SpecError, match="not a path"):
            checked_name(bad)
