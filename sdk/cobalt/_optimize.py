"""``ct.optimize``: a smaller, faster copy of a PyTorch model, and how far it drifted.

Options are checked before torch is imported; the transforms and measurements
live in :mod:`cobalt._optimize_torch`, imported only here, so ``import
cobalt`` stays free of torch.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from numbers import Real
from typing import TYPE_CHECKING, Any, Literal

from cobalt._optimize_report import FidelityMetric, OptimizationReport, format_bytes
from cobalt_common.errors import FidelityError, SpecError

if TYPE_CHECKING:
    import torch

Quantize = Literal["int8", "fp16", "bf16"]
"""Accepted ``quantize`` values (any case); ``None`` leaves the weights' dtype alone."""

Fidelity = Literal["auto", "cosine", "top1"]
"""Accepted ``fidelity`` metrics; ``auto`` is cosine similarity, which fits any output."""

QUANTIZE_OPTIONS: tuple[str, ...] = ("int8", "fp16", "bf16")
FIDELITY_OPTIONS: tuple[str, ...] = ("auto", "cosine", "top1")
MAX_SPARSITY = 0.95
"""Above this little of each layer is left; the fidelity check would refuse it anyway."""


def _number(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(float(value)):
        raise SpecError(f"{name}={value!r} is not a number")
    return float(value)


def _check_options(
    quantize: object,
    sparsity: object,
    compile: object,
    calibration: object,
    min_fidelity: object,
    fidelity: object,
    evaluation: object = None,
) -> tuple[str | None, float, FidelityMetric, float | None]:
    """Validates every option; returns quantize, sparsity, metric and threshold, normalized."""
    if quantize is not None:
        if not isinstance(quantize, str) or quantize.lower() not in QUANTIZE_OPTIONS:
            accepted = ", ".join(repr(q) for q in QUANTIZE_OPTIONS)
            raise SpecError(f"quantize={quantize!r} is not one of {accepted} or None")
        quantize = quantize.lower()
    level = _number("sparsity", sparsity)
    if not 0.0 <= level <= MAX_SPARSITY:
        raise SpecError(
            f"sparsity={sparsity!r} is outside [0, {MAX_SPARSITY}]: it is the fraction of each "
            "Linear and Conv layer's weights set to zero"
        )
    if not isinstance(compile, bool):
        raise SpecError(f"compile={compile!r} is not True or False")
    if not isinstance(fidelity, str) or fidelity not in FIDELITY_OPTIONS:
        accepted = ", ".join(repr(f) for f in FIDELITY_OPTIONS)
        raise SpecError(f"fidelity={fidelity!r} is not one of {accepted}")
    threshold = None
    if min_fidelity is not None:
        threshold = _number("min_fidelity", min_fidelity)
        if not 0.0 < threshold <= 1.0:
            raise SpecError(
                f"min_fidelity={min_fidelity!r} is not in (0, 1]: it is the least minimum "
                "cosine similarity (or top-1 agreement) to accept, such as 0.99"
            )
    if calibration is not None and not isinstance(calibration, list | tuple):
        hint = " (for one batch, pass [batch])" if hasattr(calibration, "shape") else ""
        raise SpecError(
            f"calibration must be a list of example inputs, not a "
            f"{type(calibration).__name__}{hint}"
        )
    if calibration is not None and len(calibration) == 0:
        raise SpecError("calibration is empty: pass at least one example input, or None")
    if evaluation is not None:
        if not isinstance(evaluation, list | tuple):
            hint = " (for one batch, pass [batch])" if hasattr(evaluation, "shape") else ""
            raise SpecError(
                f"evaluation must be a list of example inputs, not a "
                f"{type(evaluation).__name__}{hint}"
            )
        if len(evaluation) == 0:
            raise SpecError("evaluation is empty: pass at least one held-out input, or None")
    if calibration is None:
        needs = [
            reason
            for reason, wanted in (
                (
                    f"min_fidelity={min_fidelity!r} (fidelity is measured on them)",
                    threshold is not None and evaluation is None,
                ),
                ("compile=True (compilation is checked on one)", compile),
                (
                    "fidelity='top1' (agreement is measured on them)",
                    fidelity == "top1" and evaluation is None,
                ),
            )
            if wanted
        ]
        if needs:
            raise SpecError(
                "calibration inputs are needed for " + " and ".join(needs) + "; pass "
                "calibration=[example inputs] (tensors, tuples of args or dicts of kwargs)"
            )
    metric: FidelityMetric = "top1" if fidelity == "top1" else "cosine"
    return quantize, level, metric, threshold


def _advice(quantize: str | None, sparsity: float, compiled: bool) -> str:
    """What to try when the fidelity is too low, most effective first."""
    tips = []
    if sparsity:
        tips.append(f"a lower sparsity than {sparsity:g} (or 0)")
    if quantize == "int8":
        tips.append("quantize='fp16' or 'bf16' (int8 here is already per-channel)")
    elif quantize == "bf16":
        tips.append("quantize='fp16' (3 more mantissa bits than bf16) or None")
    elif quantize == "fp16":
        tips.append("quantize=None")
    if compiled:
        tips.append("compile=False")
    if not tips:
        return "nothing was changed but the copy itself: check the model is deterministic"
    return "try " + ", or ".join(tips)


def optimize(
    model: torch.nn.Module,
    *,
    quantize: Quantize | None = None,
    sparsity: float = 0.0,
    compile: bool = False,
    calibration: Sequence[Any] | None = None,
    evaluation: Sequence[Any] | None = None,
    min_fidelity: float | None = None,
    fidelity: Fidelity = "auto",
) -> tuple[torch.nn.Module, OptimizationReport]:
    """Returns an optimized copy of a PyTorch model, and a report comparing it to the original.

    The model itself is never changed. Steps run in this order: magnitude
    pruning, quantization, compilation; the copy is returned in eval mode.

    Args:
        model: a ``torch.nn.Module``.
        quantize: ``"int8"``: int8 for every ``nn.Linear``, weights quantized
            per output channel, activations per call and per row (token), so
            that a row's result does not depend on the rest of its batch
            (per tensor, with torch's dynamic kernel, where ``torch._int_mm``
            is missing); CPU only.
            ``"fp16"`` / ``"bf16"``: the copy is cast, and floating-point inputs
            must then be of that dtype too. ``None``: weights keep their dtype.
        sparsity: fraction of each Linear and Conv layer's weights set to zero
            by magnitude (0 to 0.95), before quantizing. Zeros are stored
            densely, so this alone shrinks neither the size nor the latency.
        compile: ``torch.compile`` the result. When it fails on this machine
            the eager model is returned and ``report.skipped`` says why.
        calibration: example inputs, each a tensor, a tuple of positional
            arguments, or a dict of keyword arguments (a tokenizer's output).
            int8 chooses its smoothing strength on them. Both
            models run on each under ``torch.inference_mode()`` to measure
            latency and fidelity, unless ``evaluation`` is given. Without
            either the report has sizes only.
        evaluation: held-out inputs, of the same kinds, that latency and
            fidelity (and ``min_fidelity``) are measured on instead of the
            calibration inputs, so that the figures are for inputs the
            optimization was not tuned on. ``report.fidelity_source`` says
            which set the figures come from. For a causal LM (a
            ``transformers`` ``*ForCausalLM``) given token ids, each row is a
            prompt run at batch 1: ``report.causal_lm`` has its prefill and
            decode-step latency and next-token agreement, and
            ``report.speedup`` is the decode step's.
        min_fidelity: raise :class:`cobalt.FidelityError` (with the report) if
            the fidelity is below this: the minimum cosine similarity, or the
            top-1 agreement with ``fidelity="top1"``.
        fidelity: ``"cosine"`` (``"auto"``): cosine similarity of the first
            output tensor, 3-D outputs mean-pooled over tokens (see
            :class:`cobalt.OptimizationReport`); ``"top1"``: agreement of the
            argmax over the last dimension.

    Returns:
        ``(optimized_model, report)``.

    Raises:
        SpecError: an option is invalid, or calibration inputs are missing
            where the options need them.
        FidelityError: the fidelity is below ``min_fidelity``.

    Example:
        >>> small, report = ct.optimize(  # doctest: +SKIP
        ...     model, quantize="int8", calibration=[tokenizer(s, return_tensors="pt")
        ...     for s in sentences], evaluation=[tokenizer(s, return_tensors="pt")
        ...     for s in held_out], min_fidelity=0.99)
        >>> print(report)  # doctest: +SKIP
    """
    quantize_, level, metric, threshold = _check_options(
        quantize, sparsity, compile, calibration, min_fidelity, fidelity, evaluation
    )
    try:
        from cobalt import _optimize_causal as oc
        from cobalt import _optimize_torch as ot
    except ImportError as exc:
        raise ModuleNotFoundError(
            f"ct.optimize needs PyTorch ({exc}): pip install 'cobalt[models]'"
        ) from exc
    import torch

    if not isinstance(model, torch.nn.Module):
        raise SpecError(f"ct.optimize takes a torch.nn.Module, not a {type(model).__name__}")
    items = list(calibration or [])
    ot.check_calibration(items)
    held_out = list(evaluation or [])
    ot.check_calibration(held_out, "evaluation")
    measured_on = held_out or items
    generates = _generates(model) and bool(measured_on)
    prompts: list[Any] = []
    no_prompts = ""
    if generates:  # its speed is a decode step's, measured on token ids: refuse bad ones now
        source = "evaluation" if held_out else "calibration"
        prompts, no_prompts = oc.token_prompts(model, measured_on, source)
        if held_out and items:
            oc.token_prompts(model, items, "calibration")
    if quantize_ == "int8" and ot.device_of(model).type != "cpu":
        raise SpecError(
            f"quantize='int8' runs on the CPU and the model is on {ot.device_of(model)}: "
            "use quantize='fp16' or 'bf16' there, or move the model to the CPU first"
        )

    applied: list[str] = []
    skipped: list[str] = []
    size_before = ot.state_dict_bytes(model)
    before = reference = None
    if measured_on:
        with ot.eval_mode(model):
            before = ot.run_all(model, measured_on, timed=not generates)
            reference = before if not held_out else None
            if held_out and items and quantize_ == "int8":
                reference = ot.run_all(model, items, timed=False)
    optimized = ot.inference_copy(model)
    if level:
        layers = ot.prune_weights(optimized, level)
        if layers:
            applied.append(
                f"sparsity {level:g}: smallest-magnitude weights zeroed in {layers} Linear/Conv "
                "layer(s), per layer; stored and multiplied densely, so the zeros give no "
                "speed and no size here (unstructured zeros need sparse kernels that torch's "
                "CPU matmuls do not use)"
            )
        else:
            skipped.append("sparsity: the model has no Linear or Conv layer to prune")
    input_dtype = None
    if quantize_ == "int8":
        from cobalt import _optimize_int8  # torch, as _optimize_torch above: only when optimizing

        def score(candidate: torch.nn.Module) -> float:
            assert reference is not None
            outputs = ot.run_all(candidate, items, timed=False)
            return ot.headline(ot.fidelity_samples(reference, outputs, items, metric), metric)

        int8 = _optimize_int8.quantize_int8(optimized, items, score)
        optimized = int8.model
        if int8.layers:
            activations = f"{int8.activation_bits}-bit per tensor (torch._int_mm is missing)"
            if int8.per_token_layers == int8.layers:
                activations = "8-bit per token (row), each row its own scale and zero point"
            applied.append(
                f"int8: {int8.layers} nn.Linear layer(s), weights per output channel, "
                f"activations quantized per call: {activations}"
            )
        else:
            skipped.append("int8: the model has no nn.Linear layer to quantize")
        if int8.tried:
            tried = ", ".join(
                f"{'none' if a is None else f'{a:g}'}: {v:.4f}" for a, v in int8.tried.items()
            )
            chosen = "no smoothing" if int8.alpha is None else f"alpha={int8.alpha:g}"
            where = (
                "the fidelity below is measured on the held-out evaluation inputs instead"
                if held_out
                else "which the fidelity below is measured on too"
            )
            measure = "min cosine" if metric == "cosine" else "top-1 agreement"
            applied.append(
                f"int8 smoothing: {chosen}, chosen on the calibration inputs ({where}) by "
                f"{measure}: {tried}"
            )
        if int8.other_float_bytes:
            skipped.append(
                f"int8 covers nn.Linear only: {format_bytes(int8.other_float_bytes)} of other "
                "weights (embeddings, norms, convolutions) keep their dtype"
            )
    elif quantize_ is not None:
        input_dtype = ot.FLOAT_DTYPES[quantize_]
        optimized = optimized.to(input_dtype)
        applied.append(
            f"{quantize_}: weights and buffers cast to {str(input_dtype).removeprefix('torch.')};"
            " floating-point inputs must be cast too"
        )
    size_after = ot.state_dict_bytes(optimized)
    compiled = False
    if compile:
        optimized, failure = ot.try_compile(optimized, measured_on[0], input_dtype)
        compiled = not failure
        if compiled:
            first = "evaluation[0]" if held_out else "calibration[0]"
            applied.append(f"compile: torch.compile, checked on {first}")
        else:
            skipped.append(f"compile: {failure}; the model runs eagerly")
    causal = None
    if prompts:
        causal, notes = oc.compare(model, optimized, prompts)
        skipped.extend(notes)
    elif generates:
        skipped.append(no_prompts)

    measured: dict[str, Any] = {}
    if before is not None:
        after = ot.run_all(optimized, measured_on, input_dtype, timed=not generates)
        samples = ot.fidelity_samples(before, after, measured_on, metric)
        if metric == "cosine":
            measured.update(cosine_min=float(samples.min()), cosine_mean=float(samples.mean()))
        else:
            measured.update(top1_agreement=float(samples.mean()))
        measured.update(
            calibration_items=len(items),
            evaluation_items=len(held_out),
            fidelity_source="evaluation" if held_out else "calibration",
            latency_ms_before=None if generates else before.median_ms,
            latency_ms_after=None if generates else after.median_ms,
            fidelity_metric=metric,
            fidelity=ot.headline(samples, metric),
            samples=samples.numel(),
        )
    report = OptimizationReport(
        quantize=quantize_,
        sparsity=level,
        compiled=compiled,
        applied=tuple(applied),
        skipped=tuple(skipped),
        size_bytes_before=size_before,
        size_bytes_after=size_after,
        causal_lm=causal,
        **measured,
    )
    if threshold is not None and report.fidelity is not None and report.fidelity < threshold:
        what = "minimum cosine similarity" if metric == "cosine" else "top-1 agreement"
        raise FidelityError(
            f"ct.optimize ({report.describe()}): the {what} to the original model is "
            f"{report.fidelity:.4f} over {report.samples} samples of the "
            f"{report.fidelity_source} inputs, below "
            f"min_fidelity={threshold:g}; {_advice(quantize_, level, compiled)}. "
            "The measurements are in exc.report.",
            report=report,
        )
    return optimized, report


def _generates(model: object) -> bool:
    """Whether ``model`` is a ``transformers`` causal LM (it generates text token by token)."""
    return callable(getattr(model, "generate", None)) and type(model).__name__.endswith(
        "ForCausalLM"
    )
