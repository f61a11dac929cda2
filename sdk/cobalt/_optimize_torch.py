"""The PyTorch side of ``ct.optimize``: transforms a copy of a model and measures both.

Imported only when ``ct.optimize`` runs, so ``import cobalt`` never imports
torch. Everything here works on CPU models; int8 is CPU-only in torch.
"""

from __future__ import annotations

import contextlib
import copy
import io
import math
import statistics
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import torch
from torch import nn

from cobalt_common.errors import SpecError

PRUNABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
"""Layers whose ``weight`` ``sparsity`` prunes."""

WARMUP_ITEMS = 3
"""Calibration inputs run once, untimed, before the timed passes."""

MAX_PASSES = 5
TIMED_BUDGET_S = 2.0
"""No further timed pass starts when it would take the passes past this, in seconds."""

FLOAT_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}

_TORCH_DEPRECATIONS = (
    r"torch\.ao\.quantization is deprecated",
    r".*quantized tensor creation functions",
    r"`torch\.jit\.script_method` is deprecated",
)
"""torch 2.13 warns that eager-mode quantization moves to torchao (and torch.compile,
tracing a quantized module, that torch.jit is deprecated); both still work and the
user called neither, so ``ct.optimize`` does not show these."""


@contextlib.contextmanager
def quiet_deprecations() -> Iterator[None]:
    """Hides :data:`_TORCH_DEPRECATIONS` for the block."""
    with warnings.catch_warnings():
        for message in _TORCH_DEPRECATIONS:
            warnings.filterwarnings("ignore", message=message)
        yield


def state_dict_bytes(model: nn.Module) -> int:
    """Bytes of ``torch.save(model.state_dict())``: what storing the weights takes."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getbuffer().nbytes


def device_of(model: nn.Module) -> torch.device:
    """The device of the model's first parameter or buffer (CPU for a model with neither)."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Runs the block with ``model`` in eval mode, then restores each module's own mode."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, training in modes:
            module.training = training


def inference_copy(model: nn.Module) -> nn.Module:
    """A deep copy in eval mode; the user's model is never changed."""
    try:
        clone = copy.deepcopy(model)
    except Exception as exc:
        raise SpecError(
            f"ct.optimize works on a copy of the model, and copy.deepcopy failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    return clone.eval()


def prune_weights(model: nn.Module, sparsity: float) -> int:
    """Zeroes the ``sparsity`` fraction of smallest-magnitude weights in each Linear and Conv.

    Per layer (``l1_unstructured``), then made permanent (``prune.remove``), so
    the model has plain weights again. Returns how many weights were pruned.
    """
    from torch.nn.utils import prune

    pruned = 0
    for module in model.modules():
        if isinstance(module, PRUNABLE) and isinstance(module.weight, nn.Parameter):
            prune.l1_unstructured(module, "weight", amount=sparsity)  # type: ignore[no-untyped-call]
            prune.remove(module, "weight")  # type: ignore[no-untyped-call]
            pruned += 1
    return pruned


def cast_inputs(item: Any, dtype: torch.dtype | None) -> Any:
    """``item`` with its floating-point tensors cast to ``dtype`` (integer ids stay)."""
    if dtype is None:
        return item
    if isinstance(item, torch.Tensor):
        return item.to(dtype) if item.is_floating_point() else item
    if isinstance(item, tuple):
        return tuple(cast_inputs(v, dtype) for v in item)
    if isinstance(item, Mapping):
        return {k: cast_inputs(v, dtype) for k, v in item.items()}
    return item


def call(model: nn.Module, item: Any, dtype: torch.dtype | None = None) -> Any:
    """Runs the model on one calibration input: a tensor, a tuple of args or a dict of kwargs."""
    item = cast_inputs(item, dtype)
    if isinstance(item, torch.Tensor):
        return model(item)
    if isinstance(item, tuple):
        return model(*item)
    return model(**item)


def check_calibration(items: Sequence[Any], name: str = "calibration") -> None:
    """Each input is a tensor, a tuple of positional args or a mapping of kwargs."""
    for i, item in enumerate(items):
        if not isinstance(item, torch.Tensor | tuple | Mapping):
            raise SpecError(
                f"{name}[{i}] is a {type(item).__name__}; each {name} input is a "
                "tensor, a tuple of positional arguments, or a dict of keyword arguments "
                "(such as a tokenizer's output)"
            )


def try_compile(model: nn.Module, first: Any, dtype: torch.dtype | None) -> tuple[nn.Module, str]:
    """``torch.compile(model)``, checked on one input; on failure, the eager model and why.

    torch.compile compiles on the first call, so that is where it fails (no C++
    compiler, an unsupported operator): that call is made here.
    """
    try:
        with quiet_deprecations():
            compiled = cast(nn.Module, torch.compile(model))
            with torch.inference_mode():
                call(compiled, first, dtype)
    except Exception as exc:
        reason = (str(exc).strip().splitlines() or [""])[0][:200]
        return model, f"torch.compile failed ({type(exc).__name__}: {reason})"
    return compiled, ""


def first_tensor(output: Any) -> torch.Tensor:
    """The tensor fidelity compares: the output itself, or the first tensor inside it."""
    if isinstance(output, torch.Tensor):
        return output
    values: list[Any] = []
    if isinstance(output, Mapping):
        values = list(output.values())
    elif isinstance(output, tuple | list):
        values = list(output)
    for value in values:
        with contextlib.suppress(SpecError):
            return first_tensor(value)
    raise SpecError(
        f"the model returned a {type(output).__name__} with no tensor in it; ct.optimize "
        "compares the first tensor of each output"
    )


@dataclass(frozen=True)
class Run:
    outputs: list[torch.Tensor]
    """The first tensor of each output, as float32 on the CPU."""
    median_ms: float


def run_all(
    model: nn.Module, items: Sequence[Any], dtype: torch.dtype | None = None, *, timed: bool = True
) -> Run:
    """Runs the calibration inputs after a warm-up, timing each call.

    The timed pass repeats (up to :data:`MAX_PASSES`, while under
    :data:`TIMED_BUDGET_S` in all) and each input keeps its fastest time, so a
    busy neighbour on the machine does not count as the model's latency; the
    latency is the median of those over the inputs.
    With ``timed=False``, one pass without a warm-up: the outputs only.
    """
    outputs: list[torch.Tensor] = []
    best = [math.inf] * len(items)
    with torch.inference_mode(), quiet_deprecations():
        for item in items[:WARMUP_ITEMS] if timed else ():
            call(model, item, dtype)
        started = time.perf_counter()
        for attempt in range(MAX_PASSES if timed else 1):
            for i, item in enumerate(items):
                start = time.perf_counter()
                output = call(model, item, dtype)
                best[i] = min(best[i], time.perf_counter() - start)
                if attempt == 0:
                    outputs.append(first_tensor(output).detach().float().cpu())
            elapsed = time.perf_counter() - started
            if elapsed / (attempt + 1) * (attempt + 2) > TIMED_BUDGET_S:
                break  # one more pass would go over the budget
    return Run(outputs, statistics.median(best) * 1000)


def _pool(output: torch.Tensor, item: Any) -> torch.Tensor:
    """One row per sample: 3-D ``(batch, tokens, hidden)`` is mean-pooled over tokens."""
    if output.dim() <= 1:
        return output.reshape(1, -1)
    if output.dim() == 2:
        return output
    if output.dim() == 3:
        mask = item.get("attention_mask") if isinstance(item, Mapping) else None
        if isinstance(mask, torch.Tensor) and tuple(mask.shape) == tuple(output.shape[:2]):
            weights = mask.detach().float().cpu().unsqueeze(-1)
            return (output * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return output.mean(dim=1)
    return output.flatten(start_dim=1)


def _cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise cosine similarity; two zero rows agree (1.0), a non-finite row scores 0."""
    dot = (a * b).sum(dim=1)
    norms = a.norm(dim=1) * b.norm(dim=1)
    both_zero = (a.norm(dim=1) == 0) & (b.norm(dim=1) == 0)
    cos = torch.where(norms > 0, dot / norms.clamp(min=1e-30), torch.zeros_like(dot))
    cos = torch.where(both_zero, torch.ones_like(cos), cos)
    return torch.where(torch.isfinite(cos), cos, torch.zeros_like(cos))


def _check_shapes(i: int, ref: torch.Tensor, out: torch.Tensor) -> None:
    if ref.shape != out.shape:
        raise SpecError(
            f"input {i}: the optimized model's output has shape {tuple(out.shape)}, "
            f"the original's {tuple(ref.shape)}; they cannot be compared"
        )


def cosine_samples(before: Run, after: Run, items: Sequence[Any]) -> torch.Tensor:
    """Cosine similarity of every output row (pooled) against the original's."""
    scores = []
    for i, (ref, out, item) in enumerate(zip(before.outputs, after.outputs, items, strict=True)):
        _check_shapes(i, ref, out)
        scores.append(_cosine(_pool(ref, item), _pool(out, item)))
    return torch.cat(scores)


def top1_samples(before: Run, after: Run) -> torch.Tensor:
    """1.0 where the argmax of the last dimension agrees with the original's, else 0.0."""
    agree = []
    for i, (ref, out) in enumerate(zip(before.outputs, after.outputs, strict=True)):
        _check_shapes(i, ref, out)
        agree.append((ref.argmax(dim=-1) == out.argmax(dim=-1)).float().reshape(-1))
    return torch.cat(agree)


def fidelity_samples(before: Run, after: Run, items: Sequence[Any], metric: str) -> torch.Tensor:
    """Per-sample cosine similarity, or per-position top-1 agreement (1.0 or 0.0)."""
    if metric == "top1":
        return top1_samples(before, after)
    return cosine_samples(before, after, items)


def headline(samples: torch.Tensor, metric: str) -> float:
    """The value ``min_fidelity`` is checked against: the minimum cosine, or the agreement."""
    return float(samples.mean() if metric == "top1" else samples.min())
