"""A small decoding step runs on the thread count measured fastest for its batch size,
and gives exactly what it gives on every thread."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

import cobalt as ct  # noqa: E402
from cobalt.llm import _threads  # noqa: E402
from cobalt.llm._threads import RETRY_EVERY, SMALL_ROWS, TRIALS, ThreadChoice  # noqa: E402

pytestmark = pytest.mark.unit


def _settle(choice: ThreadChoice, rows: int, seconds: dict[int, float]) -> None:
    for _ in range(2 * TRIALS):
        threads = choice.pick(rows)
        choice.timed(rows, threads, seconds[threads])


def test_each_small_batch_size_keeps_the_faster_choice_and_retries_the_other_now_and_then() -> None:
    choice = ThreadChoice(8)
    _settle(choice, 1, {1: 0.010, 8: 0.030})
    _settle(choice, 3, {1: 0.050, 8: 0.020})
    picks = [choice.pick(1) for _ in range(RETRY_EVERY)]
    assert picks.count(8) == 1 and picks.count(1) == RETRY_EVERY - 1, "one retry of the slower"
    assert choice.pick(3) == 8
    assert choice.pick(SMALL_ROWS + 1) == 8, "larger batches use every thread, untimed"
    for _ in range(6):  # retries found every thread faster now: its average moves
        choice.timed(1, 8, 0.001)
    assert choice.pick(1) == 8


def test_one_thread_is_never_asked_to_choose_and_nonsense_times_are_ignored() -> None:
    single = ThreadChoice(1)
    assert {single.pick(rows) for rows in range(1, 6)} == {1}
    choice = ThreadChoice(2)
    choice.timed(1, 1, float("nan"))
    choice.timed(1, 1, -1.0)
    assert choice.pick(1) == 1, "still trying one thread: nothing was counted"


def test_a_step_on_one_thread_gives_what_it_gives_on_every_thread(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    model, tokenizer = ct.llm.random_model(seed=0)
    seen: list[int] = []
    real = _threads.ThreadChoice.pick

    def pick(self: ThreadChoice, rows: int) -> int:
        threads = real(self, rows)
        seen.append(threads)
        return threads

    answers = {}
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        for forced in ("one", "every"):
            chosen = (lambda self, rows: 1) if forced == "one" else (lambda self, rows: 2)
            monkeypatch.setattr(_threads.ThreadChoice, "pick", chosen)
            engine = ct.llm.Engine(model, tokenizer, prefix_cache=False)
            try:
                answers[forced] = engine.generate([5, 6, 7], max_tokens=24, temperature=0).token_ids
                assert torch.get_num_threads() == 2, "the step gives the threads back"
            finally:
                engine.close()
        monkeypatch.setattr(_threads.ThreadChoice, "pick", pick)
        engine = ct.llm.Engine(model, tokenizer, prefix_cache=False)
        try:
            assert (
                engine.generate([5, 6, 7], max_tokens=24, temperature=0).token_ids
                == (answers["one"])
            )
        finally:
            engine.close()
    finally:
        torch.set_num_threads(before)
    assert answers["one"] == answers["every"]
    assert seen[: 2 * TRIALS] == [1] * TRIALS + [2] * TRIALS, "both were timed first"
