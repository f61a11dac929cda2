"""``ct.optimize`` on a small seeded MLP: each option, its validation, and the report."""

from __future__ import annotations

import copy
import html.parser
import importlib.util
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

import cobalt as ct

pytestmark = pytest.mark.unit

HAVE_TORCH = importlib.util.find_spec("torch") is not None
if HAVE_TORCH:
    import torch
    from torch import nn


@pytest.fixture(autouse=True)
def _torch(requires_service: Callable[..., None]) -> None:
    requires_service("PyTorch", HAVE_TORCH, "scripts/bootstrap dev,models installs it")


def _mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Linear(64, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)
    )


@pytest.fixture
def mlp() -> nn.Module:
    return _mlp()


@pytest.fixture
def batches() -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    return [torch.randn(8, 64, generator=generator) for _ in range(8)]


def _weights(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def _quantized(model: nn.Module) -> list[Any]:
    """The int8 layers: per-token ones, or torch's dynamic ones where ``_int_mm`` is missing."""
    names = ("PerTokenInt8Linear", "DynamicQuantizedLinear")
    return [m for m in model.modules() if m._get_name() in names]


def _int8_weight(layer: Any) -> torch.Tensor:
    """``(out_features, in_features)`` int8 weight of either kind of int8 layer."""
    if layer._get_name() == "PerTokenInt8Linear":
        return layer.weight_int8.t()  # type: ignore[no-any-return]
    return layer.weight().int_repr()  # type: ignore[no-any-return]


def _linear_weights(model: nn.Module) -> list[torch.Tensor]:
    return [m.weight for m in model.modules() if isinstance(m, nn.Linear)]


# --- int8 --------------------------------------------------------------------------------------


def test_int8_quantizes_every_linear_per_channel_and_shrinks_the_model(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    small, report = ct.optimize(mlp, quantize="int8", calibration=batches)

    quantized = _quantized(small)
    assert len(quantized) == 3
    for layer in quantized:  # one scale per output channel
        if layer._get_name() == "PerTokenInt8Linear":
            assert layer.weight_scale.shape == (layer.out_features,)
        else:
            assert layer.weight().qscheme() == torch.per_channel_affine
    assert report.size_bytes_after < report.size_bytes_before / 3
    assert report.size_ratio > 3
    assert report.fidelity_metric == "cosine"
    assert report.cosine_min is not None and report.cosine_min > 0.999
    assert report.fidelity == report.cosine_min
    assert report.samples == 8 * 8  # one per row of each batch
    assert report.latency_ms_before and report.latency_ms_after
    assert any("per output channel" in step for step in report.applied)


def test_the_users_model_is_never_changed(mlp: nn.Module, batches: list[torch.Tensor]) -> None:
    mlp.train()
    before = _weights(mlp)

    ct.optimize(mlp, quantize="int8", sparsity=0.5, calibration=batches)
    ct.optimize(mlp, quantize="fp16", calibration=batches)

    after = mlp.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [type(m) for m in mlp] == [nn.Linear, nn.ReLU, nn.Linear, nn.ReLU, nn.Linear]
    assert all(m.training for m in mlp.modules()), "its train/eval mode is restored"


def test_the_optimized_model_is_in_eval_mode_and_runs(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    small, _ = ct.optimize(mlp.train(), quantize="int8")
    assert not small.training
    assert small(batches[0]).shape == (8, 10)


# --- fp16 / bf16 -------------------------------------------------------------------------------


@pytest.mark.parametrize(("quantize", "dtype"), [("fp16", "float16"), ("bf16", "bfloat16")])
def test_fp16_and_bf16_cast_a_copy_and_halve_the_size(
    mlp: nn.Module, batches: list[torch.Tensor], quantize: str, dtype: str
) -> None:
    half, report = ct.optimize(mlp, quantize=quantize, calibration=batches)  # type: ignore[arg-type]

    assert {p.dtype for p in half.parameters()} == {getattr(torch, dtype)}
    assert {p.dtype for p in mlp.parameters()} == {torch.float32}
    assert report.size_bytes_after == pytest.approx(report.size_bytes_before / 2, rel=0.05)
    assert report.cosine_min is not None and report.cosine_min > 0.99
    assert any("inputs must be cast" in step for step in report.applied)


# --- sparsity ----------------------------------------------------------------------------------


def test_sparsity_zeroes_that_fraction_of_each_linear_weight(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    sparse, report = ct.optimize(mlp, sparsity=0.5, calibration=batches)

    for weight in _linear_weights(sparse):
        assert (weight == 0).float().mean().item() == pytest.approx(0.5, abs=0.01)
        assert not hasattr(weight, "weight_orig"), "pruning is made permanent"
    assert not any(hasattr(m, "weight_mask") for m in sparse.modules())
    assert all((w != 0).all() for w in _linear_weights(mlp))
    assert report.sparsity == 0.5
    assert report.cosine_min is not None and report.cosine_min < 0.999
    assert "give no speed and no size here" in str(report), "the report says what zeros give"


def test_sparsity_runs_before_int8(mlp: nn.Module, batches: list[torch.Tensor]) -> None:
    small, report = ct.optimize(mlp, sparsity=0.3, quantize="int8", calibration=batches)

    first = _quantized(small)[0]
    zeros = (_int8_weight(first) == 0).float().mean().item()
    assert zeros == pytest.approx(0.3, abs=0.01)
    assert [s.split(":")[0] for s in report.applied] == ["sparsity 0.3", "int8", "int8 smoothing"]


def test_sparsity_also_prunes_convolutions() -> None:
    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    pruned, report = ct.optimize(cnn, sparsity=0.25, calibration=[torch.randn(2, 3, 8, 8)])

    conv = pruned[0]
    assert isinstance(conv, nn.Conv2d)
    assert (conv.weight == 0).float().mean().item() == pytest.approx(0.25, abs=0.02)
    assert "2 Linear/Conv layer(s)" in report.applied[0]


# --- compile -----------------------------------------------------------------------------------


def test_compile_falls_back_to_eager_and_says_so(
    mlp: nn.Module, batches: list[torch.Tensor], monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(model: Any, **_: Any) -> Any:
        raise RuntimeError("no C++ compiler found\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    small, report = ct.optimize(mlp, quantize="int8", compile=True, calibration=batches)

    assert not report.compiled
    assert isinstance(small, nn.Sequential)
    assert report.skipped == (
        "compile: torch.compile failed (RuntimeError: no C++ compiler found); "
        "the model runs eagerly",
    )
    assert "compile" not in report.describe()


def test_compile_returns_the_compiled_model_when_it_works(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    small, report = ct.optimize(mlp, quantize="int8", compile=True, calibration=batches)

    if not report.compiled:  # the machine cannot compile: the fallback must say why
        assert report.skipped and "torch.compile failed" in report.skipped[-1]
        pytest.skip(report.skipped[-1])
    assert hasattr(small, "_orig_mod")
    assert report.applied[-1].startswith("compile: torch.compile")
    assert report.cosine_min is not None and report.cosine_min > 0.999


# --- calibration inputs and the fidelity metrics -----------------------------------------------


class _TwoInputs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.a = nn.Linear(16, 8)
        self.b = nn.Linear(16, 8)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.a(x) + self.b(y), x


class _TinyEncoder(nn.Module):
    """Token ids in, ``{"last_hidden_state": (batch, tokens, hidden)}`` out, as transformers."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(100, 32)
        self.proj = nn.Linear(32, 32)

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        return {"last_hidden_state": self.proj(self.embed(input_ids)), "mask": attention_mask}


def test_calibration_inputs_can_be_tuples_of_args() -> None:
    items = [(torch.randn(4, 16), torch.randn(4, 16)) for _ in range(3)]
    _, report = ct.optimize(_TwoInputs(), quantize="int8", calibration=items)

    assert report.calibration_items == 3
    assert report.samples == 12  # the first tensor of the tuple, one sample per row


def test_calibration_inputs_can_be_dicts_of_kwargs_and_3d_outputs_are_mean_pooled() -> None:
    ids = torch.randint(0, 100, (4, 12))
    mask = torch.ones(4, 12, dtype=torch.long)
    mask[:, 8:] = 0  # padding: left out of the pooled mean
    _, report = ct.optimize(
        _TinyEncoder(),
        quantize="int8",
        calibration=[{"input_ids": ids, "attention_mask": mask}],
    )

    assert report.samples == 4  # one pooled vector per sequence
    assert report.cosine_min is not None and report.cosine_min > 0.99
    assert any("Embedding" in s or "embeddings" in s for s in report.skipped)


def test_top1_measures_argmax_agreement(mlp: nn.Module, batches: list[torch.Tensor]) -> None:
    _, report = ct.optimize(mlp, sparsity=0.6, fidelity="top1", calibration=batches)

    assert report.fidelity_metric == "top1"
    assert report.cosine_min is None
    assert report.top1_agreement is not None and 0.0 <= report.top1_agreement < 1.0
    assert report.fidelity == report.top1_agreement
    assert report.samples == 64
    assert "top-1 agreement" in str(report)


def test_without_calibration_the_report_has_sizes_only(mlp: nn.Module) -> None:
    _, report = ct.optimize(mlp, quantize="int8")

    assert report.latency_ms_before is None and report.speedup is None
    assert report.fidelity is None and report.fidelity_metric is None
    assert report.size_ratio > 3
    assert "not measured" in str(report)


# --- min_fidelity ------------------------------------------------------------------------------


def test_fidelity_below_the_threshold_raises_with_the_report(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    with pytest.raises(ct.FidelityError) as caught:
        ct.optimize(mlp, sparsity=0.95, calibration=batches, min_fidelity=0.999)

    report = caught.value.report
    assert isinstance(report, ct.OptimizationReport)
    assert report.fidelity is not None and report.fidelity < 0.999
    message = str(caught.value)
    assert f"{report.fidelity:.4f}" in message
    assert "min_fidelity=0.999" in message
    assert "lower sparsity than 0.95" in message
    assert isinstance(caught.value, ct.Error)


def test_int8_below_the_threshold_suggests_a_float_dtype(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    with pytest.raises(ct.FidelityError, match=r"quantize='fp16' or 'bf16'"):
        ct.optimize(mlp, quantize="int8", calibration=batches, min_fidelity=1.0)


def test_fidelity_at_or_above_the_threshold_returns_the_model(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    _, report = ct.optimize(mlp, quantize="fp16", calibration=batches, min_fidelity=0.99)
    assert report.fidelity is not None and report.fidelity >= 0.99


# --- validation --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"quantize": "int4"}, r"quantize='int4' is not one of 'int8', 'fp16', 'bf16' or None"),
        ({"sparsity": 0.99}, r"sparsity=0.99 is outside \[0, 0.95\]"),
        ({"sparsity": -0.1}, r"sparsity=-0.1 is outside"),
        ({"sparsity": True}, r"sparsity=True is not a number"),
        ({"compile": "yes"}, r"compile='yes' is not True or False"),
        ({"fidelity": "l2"}, r"fidelity='l2' is not one of 'auto', 'cosine', 'top1'"),
        ({"min_fidelity": 1.5, "calibration": [0]}, r"min_fidelity=1.5 is not in \(0, 1\]"),
        ({"min_fidelity": 0.99}, r"calibration inputs are needed for min_fidelity=0.99"),
        ({"compile": True}, r"calibration inputs are needed for compile=True"),
        ({"fidelity": "top1"}, r"calibration inputs are needed for fidelity='top1'"),
        ({"calibration": []}, r"calibration is empty"),
        ({"calibration": "text"}, r"calibration must be a list of example inputs, not a str"),
        ({"calibration": [[1, 2]]}, r"calibration\[0\] is a list; each calibration input is"),
    ],
)
def test_invalid_options_are_refused_with_what_is_accepted(
    mlp: nn.Module, options: dict[str, Any], message: str
) -> None:
    with pytest.raises(ct.SpecError, match=message):
        ct.optimize(mlp, **options)


def test_a_tensor_as_calibration_is_refused_with_a_hint(mlp: nn.Module) -> None:
    with pytest.raises(ct.SpecError, match=r"not a Tensor \(for one batch, pass \[batch\]\)"):
        ct.optimize(mlp, calibration=torch.randn(4, 64))  # type: ignore[arg-type]


def test_only_torch_modules_are_optimized() -> None:
    with pytest.raises(ct.SpecError, match=r"takes a torch\.nn\.Module, not a function"):
        ct.optimize(lambda x: x, quantize="int8")  # type: ignore[arg-type]


def test_quantize_accepts_any_case(mlp: nn.Module) -> None:
    _, report = ct.optimize(mlp, quantize="INT8")  # type: ignore[arg-type]
    assert report.quantize == "int8"


# --- the report --------------------------------------------------------------------------------


class _Checker(html.parser.HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.stack: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: object) -> None:
        self.stack.append(tag)

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag
        self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_the_report_prints_a_table_with_ratios(mlp: nn.Module, batches: list[torch.Tensor]) -> None:
    _, report = ct.optimize(mlp, quantize="int8", calibration=batches)
    text = str(report)

    assert text.startswith("ct.optimize: int8\n")
    assert f"{report.size_ratio:.2f}x smaller" in text
    assert "latency (median of 8)" in text
    assert ("x faster" in text) or ("x slower" in text) or ("about the same" in text)
    assert "min cosine similarity" in text

    checker = _Checker()
    checker.feed(report._repr_html_())
    assert checker.stack == []
    rendered = "".join(checker.text)
    assert f"{report.size_ratio:.2f}x smaller" in rendered
    assert "applied: int8" in rendered


def test_the_report_is_frozen(mlp: nn.Module) -> None:
    _, report = ct.optimize(mlp)
    with pytest.raises(AttributeError):
        report.sparsity = 0.5  # type: ignore[misc]


def test_importing_cobalt_does_not_import_torch() -> None:
    code = "import sys, cobalt; assert 'torch' not in sys.modules, 'torch was imported'"
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_int8_with_calibration_picks_the_smoothing_with_the_best_fidelity(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    _, report = ct.optimize(mlp, quantize="int8", calibration=batches)

    smoothing = next(step for step in report.applied if step.startswith("int8 smoothing"))
    assert "chosen on the calibration inputs" in smoothing
    assert "none: " in smoothing and "0.75: " in smoothing
    _, plain = ct.optimize(mlp, quantize="int8")
    assert not any(step.startswith("int8 smoothing") for step in plain.applied)


def test_smoothing_alone_leaves_the_float_outputs_unchanged(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    from cobalt import _optimize_int8

    smoothed = _optimize_int8.copy.deepcopy(mlp)
    maxima = _optimize_int8.input_maxima(mlp, batches)
    _optimize_int8.smooth(smoothed, maxima, alpha=0.75)

    assert isinstance(smoothed[0], _optimize_int8.SmoothedLinear)
    with torch.inference_mode():
        torch.testing.assert_close(smoothed(batches[0]), mlp(batches[0]), rtol=1e-4, atol=1e-5)


# --- held-out evaluation and per-token activations ---------------------------------------------


def test_evaluation_inputs_are_what_fidelity_and_latency_are_measured_on(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    held_out = [torch.randn(4, 64, generator=torch.Generator().manual_seed(9)) for _ in range(3)]

    _, report = ct.optimize(mlp, quantize="int8", calibration=batches, evaluation=held_out)

    assert report.fidelity_source == "evaluation"
    assert (report.calibration_items, report.evaluation_items) == (8, 3)
    assert report.samples == 3 * 4  # rows of the evaluation inputs, not of the calibration
    assert report.measured_items == 3
    assert "over 12 samples of 3 held-out (evaluation) inputs" in report.fidelity_text()
    assert "min cosine (held-out)" in str(report)
    assert any("measured on the held-out evaluation inputs" in a for a in report.applied)


def test_without_evaluation_the_report_says_fidelity_is_on_the_calibration_inputs(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    _, report = ct.optimize(mlp, quantize="int8", calibration=batches)

    assert report.fidelity_source == "calibration"
    assert report.evaluation_items == 0
    assert "of the 8 calibration inputs it was tuned on" in report.fidelity_text()
    assert "min cosine (calibration)" in str(report)


def test_evaluation_alone_is_enough_for_min_fidelity(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    _, report = ct.optimize(mlp, quantize="fp16", evaluation=batches, min_fidelity=0.5)

    assert report.fidelity_source == "evaluation"
    assert report.calibration_items == 0


def test_fidelity_error_names_the_inputs_it_was_measured_on(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    with pytest.raises(ct.FidelityError, match="of the evaluation inputs, below"):
        ct.optimize(mlp, quantize="int8", evaluation=batches, min_fidelity=1.0)


@pytest.mark.parametrize(
    ("evaluation", "message"),
    [
        ([], "evaluation is empty"),
        ("tensor", r"evaluation must be a list of example inputs, not a Tensor \(for one batch"),
        (["text"], r"evaluation\[0\] is a str"),
    ],
)
def test_invalid_evaluation_inputs_are_refused(
    mlp: nn.Module, evaluation: Any, message: str
) -> None:
    if evaluation == "tensor":
        evaluation = torch.randn(2, 64)
    with pytest.raises(ct.SpecError, match=message):
        ct.optimize(mlp, quantize="int8", evaluation=evaluation)


def test_per_token_linear_matches_the_float_layer_closely() -> None:
    from cobalt._optimize_int8 import PerTokenInt8Linear, int_mm_available

    if not int_mm_available():
        pytest.skip("torch._int_mm does not run on this build of torch")
    torch.manual_seed(0)
    linear = nn.Linear(64, 32)
    x = torch.randn(3, 5, 64)
    x[0, 0] *= 50  # one outlier row: the others keep their own scale
    layer = PerTokenInt8Linear(linear)

    with torch.inference_mode():
        expected, got = linear(x), layer(x)
    assert got.shape == expected.shape and got.dtype == torch.float32
    cosine = nn.functional.cosine_similarity(got.reshape(-1, 32), expected.reshape(-1, 32))
    assert float(cosine.min()) > 0.999
    assert layer.weight_int8.dtype == torch.int8


def test_per_token_linear_gives_the_same_result_through_either_matmul(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Where ``torch._int_mm`` is slower than float32, the int8 values are multiplied as
    float32: integer products, so the same result up to float32 rounding."""
    from cobalt import _optimize_int8

    if not _optimize_int8.int_mm_available():
        pytest.skip("torch._int_mm does not run on this build of torch")
    assert isinstance(_optimize_int8.int_mm_is_faster(), bool)  # measured here, once
    torch.manual_seed(0)
    layer = _optimize_int8.PerTokenInt8Linear(nn.Linear(384, 1536))
    x = torch.randn(2, 7, 384)
    x[1, 3] *= 40
    results = []
    for faster in (True, False):
        monkeypatch.setattr(layer, "use_int_mm", faster)
        with torch.inference_mode():
            results.append(layer(x))
    torch.testing.assert_close(results[0], results[1], rtol=1e-6, atol=1e-5)


def test_int8_rows_do_not_depend_on_the_rest_of_the_batch(
    mlp: nn.Module, batches: list[torch.Tensor]
) -> None:
    from cobalt._optimize_int8 import int_mm_available

    if not int_mm_available():
        pytest.skip("torch._int_mm does not run on this build of torch")
    small, report = ct.optimize(mlp, quantize="int8", calibration=batches)
    x = batches[0]
    loud = torch.cat([x, 100 * torch.randn(1, 64)])  # one odd input joins the batch

    with torch.inference_mode():
        alone, together = small(x), small(loud)[: len(x)]
    torch.testing.assert_close(together, alone)
    assert any("per token (row)" in step for step in report.applied)


def test_per_token_int8_beats_per_tensor_on_outlier_rows() -> None:
    from cobalt import _optimize_int8

    if not _optimize_int8.int_mm_available():
        pytest.skip("torch._int_mm does not run on this build of torch")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 256), nn.GELU(), nn.Linear(256, 64))
    generator = torch.Generator().manual_seed(3)
    inputs = []
    for _ in range(6):
        x = torch.randn(1, 16, 64, generator=generator)
        x[0, 0] *= 40  # a [CLS]-like row, far wider than the others
        inputs.append(x)

    _, report = ct.optimize(model, quantize="int8", calibration=inputs)

    per_tensor = copy.deepcopy(model)
    _optimize_int8.quantize_linears(per_tensor)
    with torch.inference_mode():
        reference = torch.cat([model(x).reshape(-1, 64) for x in inputs])
        plain = torch.cat([per_tensor(x).reshape(-1, 64) for x in inputs])
    plain_min = float(nn.functional.cosine_similarity(reference, plain).min())
    assert report.cosine_min is not None and report.cosine_min > plain_min
