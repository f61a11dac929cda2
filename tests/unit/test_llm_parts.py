"""The model stack's parts on their own: text streaming, the batch cache, the prefix cache,
sampling, histograms, and every module's docstring examples."""

from __future__ import annotations

import doctest
import importlib

import pytest

torch = pytest.importorskip("torch")

from cobalt.llm._kv import BatchKV  # noqa: E402
from cobalt.llm._prefix import PrefixCache  # noqa: E402
from cobalt.llm._sampling import pick, probabilities  # noqa: E402
from cobalt.llm._text import TextStream  # noqa: E402
from cobalt.llm._types import SamplingParams  # noqa: E402
from cobalt_common.histogram import Histogram  # noqa: E402

pytestmark = pytest.mark.unit

MODULES = [
    "cobalt.llm",
    "cobalt.llm._backend",
    "cobalt.llm._embedder",
    "cobalt.llm._engine",
    "cobalt.llm._kv",
    "cobalt.llm._llama",
    "cobalt.llm._lookup",
    "cobalt.llm._prefix",
    "cobalt.llm._sampling",
    "cobalt.llm._stats",
    "cobalt.llm._text",
    "cobalt.llm._threads",
    "cobalt.llm._tiny",
    "cobalt.llm._types",
    "cobalt.llm._weights",
    "cobalt_common.histogram",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str) -> None:
    module = importlib.import_module(name)
    assert doctest.testmod(module, optionflags=doctest.ELLIPSIS).failed == 0


class Words:
    """A tokenizer whose tokens are words, joined with spaces, like WordPiece decoding."""

    vocab = ["hello", "world", "STOP", "again", "é"]

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(self.vocab[i] for i in ids)


def test_text_stream_spaces_words_and_stops_on_a_string_spanning_tokens() -> None:
    text = TextStream(Words(), stop=("world STOP",))
    out = [text.push(0), text.push(1), text.push(2), text.push(3)]
    assert "".join(out) == "hello " and text.stopped
    assert text.text == "hello "


def test_text_stream_releases_held_text_that_was_not_a_stop() -> None:
    text = TextStream(Words(), stop=("world peace",))
    assert text.push(0) == "hello"
    assert text.push(1) == " "  # "world" could start "world peace": held
    assert text.push(3) == "world again"
    assert text.finish() == ""
    assert text.text == "hello world again"


def test_text_stream_finish_sends_what_was_held() -> None:
    text = TextStream(Words(), stop=("hello world",))
    text.push(0)
    assert text.text == ""
    assert text.finish() == "hello"


def _row(n: int, value: float) -> list[tuple[torch.Tensor, torch.Tensor]]:
    t = torch.full((1, 1, n, 2), value)
    return [(t, t.clone())]


def test_batch_kv_pads_new_rows_and_drops_finished_ones() -> None:
    kv = BatchKV.empty()
    kv.add_rows([_row(2, 1.0), _row(4, 2.0)], lengths=[2, 4])
    assert kv.mask.tolist() == [[0, 0, 1, 1], [1, 1, 1, 1]]
    assert kv.lengths.tolist() == [2, 4]
    kv.keep_rows([0])
    assert kv.columns == 2, "leading columns no row uses are dropped"
    assert kv.layers()[0][0][0, 0, :, 0].tolist() == [1.0, 1.0]


def test_batch_kv_masks_rejected_columns_then_compacts_them_away() -> None:
    kv = BatchKV.empty()
    kv.add_rows([_row(3, 1.0), _row(3, 2.0)], lengths=[3, 3])
    for step in range(30):  # each step appends 4 columns and keeps 1 of them
        k, v = kv.layers()[0]
        new = torch.full((2, 1, 4, 2), float(step + 10))
        kv._set([(torch.cat([k, new], 2), torch.cat([v, new], 2))])
        kv.appended(4, torch.tensor([1, 1]))
        assert kv.columns <= 2 * int(kv.lengths.max()) + 32 + 4
    assert kv.lengths.tolist() == [33, 33]
    keys = kv.layers()[0][0]
    valid = keys[0, 0, kv.mask[0].bool(), 0].tolist()
    assert valid == [1.0] * 3 + [float(s + 10) for s in range(30)], "order kept by compaction"


def test_batch_kv_settle_keeps_the_accepted_prefix() -> None:
    kv = BatchKV.empty()
    kv.add_rows([_row(2, 1.0), _row(2, 1.0)], lengths=[2, 2])
    kv.mask = torch.cat([kv.mask, torch.ones(2, 3, dtype=torch.long)], 1)
    kv.lengths = kv.lengths + 3
    kv.settle(3, torch.tensor([1, 3]))
    assert kv.mask.tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]]
    assert kv.lengths.tolist() == [3, 5]
    mask, positions = kv.step_inputs(2)
    assert positions.tolist() == [[3, 4], [5, 6]], "positions count only valid tokens"
    assert mask.shape == (2, 7)


def test_prefix_cache_evicts_least_recently_used_beyond_its_budget() -> None:
    cache = PrefixCache(max_tokens=12)
    layer = [(torch.zeros(1, 1, 6, 2), torch.zeros(1, 1, 6, 2))]
    cache.store([1, 2, 3, 4, 5, 6], layer)
    cache.store([7, 8, 9, 10, 11, 12], layer)
    assert cache.lookup([1, 2, 3, 4, 5, 6, 99])[0] == 6  # 1.. is now the most recent
    cache.store([20, 21, 22, 23, 24, 25], layer)
    assert cache.lookup([7, 8, 9, 10, 11, 12, 99])[0] == 0, "evicted"
    assert cache.lookup([1, 2, 3, 4, 5, 6, 99])[0] == 6
    assert cache.lookup([1, 2, 3])[0] == 0, "too short to be worth reusing"
    full, _ = cache.lookup([1, 2, 3, 4, 5, 6])
    assert full == 5, "the last prompt token is always computed"


def test_sampling_nucleus_keeps_the_smallest_set_reaching_top_p() -> None:
    logits = torch.log(torch.tensor([[0.5, 0.3, 0.15, 0.05]]))
    probs = probabilities(logits, [SamplingParams(temperature=1.0, top_p=0.7)])
    assert probs[0].tolist() == pytest.approx([0.625, 0.375, 0.0, 0.0])
    generator = torch.Generator().manual_seed(0)
    drawn = {
        int(pick(logits, [SamplingParams(temperature=1.0, top_p=0.7)], [generator])[0])
        for _ in range(200)
    }
    assert drawn == {0, 1}


def test_histogram_quantiles_are_within_five_percent() -> None:
    h = Histogram()
    values = [i / 1000 for i in range(1, 1001)]
    for v in values:
        h.record(v)
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert h.quantile(q) == pytest.approx(exact, rel=0.05)
    assert Histogram().quantile(0.5) is None
    merged = Histogram.from_dict(h.to_dict())
    merged.merge(h)
    assert merged.count == 2000 and merged.quantile(0.5) == h.quantile(0.5)
