"""Dynamic int8 for ``ct.optimize``: per-channel weights, activations scaled per call.

Every ``nn.Linear`` gets int8 weights, one scale per output channel, and its
input is quantized to 8 bits on each call. Two things cost transformers most
of their int8 error, and calibration inputs let both be handled:

- **Outlier channels** (a few input features far larger than the rest, as in
  BERT's LayerNorm outputs). SmoothQuant (Xiao et al., 2023) moves them into
  the weights, which are quantized per channel and absorb them: input channel
  ``j`` is divided by ``s_j = max|x_j|^a / max|W[:, j]|^(1-a)`` and the
  weight's column multiplied by it, so the float result is unchanged. ``a`` is
  chosen from :data:`ALPHAS` (or no smoothing) by the fidelity on the
  calibration inputs.
- **Outlier tokens** (a few rows, such as ``[CLS]`` and ``[SEP]`` after a
  GELU, whose range is many times the others'). One scale for the whole input
  leaves the ordinary rows a few bits; on all-MiniLM-L6-v2 that took a
  two-word sentence's embedding to cosine 0.98. So each row (token) gets its
  own scale and zero point instead (:class:`PerTokenInt8Linear`, on
  ``torch._int_mm``). That also makes a row's result independent of the rest
  of the batch: with one scale per tensor, one long or odd input in a padded
  batch of 32 took another sentence's embedding from cosine 0.993 alone to
  0.984. Where ``torch._int_mm`` does not run, torch's fused per-tensor
  kernel is used instead.

Where ``torch._int_mm`` runs but is slower than a float32 matmul (CPUs without
VNNI or AMX, measured once per process: on an AVX2-only EPYC it made
all-MiniLM-L6-v2 9x slower than float32), the same int8 values are multiplied
as float32 instead. The products are integers, so the result is the same up to
float32 rounding of sums beyond 2**24 (a relative 6e-8), and the weights stay
int8 in memory.
"""

from __future__ import annotations

import copy
import functools
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

from cobalt._optimize_torch import call, quiet_deprecations

ALPHAS = (0.5, 0.65, 0.75, 0.85)
"""Smoothing strengths tried; SmoothQuant's paper finds 0.5 to 0.9 best across models."""


class FullRangeDynamicLinear(DynamicQuantizedLinear):
    """Dynamic int8 ``Linear`` that quantizes its input to all 8 bits.

    torch's own module keeps activations to 7 bits (``reduce_range=True``) so
    that pairs of 8-bit products summed in 16 bits cannot saturate on CPUs
    without VNNI. With VNNI (or on ARM's qnnpack, which ignores the flag) the
    products accumulate in 32 bits and the eighth bit is free accuracy: on
    all-MiniLM-L6-v2 it raises the minimum cosine similarity of per-channel
    int8 from 0.973 to 0.991 on repetitive sentences. Only used where
    :func:`int32_accumulation` holds.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.ops.quantized.linear_dynamic(
            x, self._packed_params._packed_params, reduce_range=False
        )
        return y.to(x.dtype)  # type: ignore[no-any-return]

    def _get_name(self) -> str:
        return "DynamicQuantizedLinear"


class PerTokenInt8Linear(nn.Module):
    """Int8 ``Linear`` whose input gets its own scale and zero point per row (token).

    Weights are int8 with one symmetric scale per output channel. Each call
    quantizes every row of the input to 8 bits over that row's own range
    (asymmetric, so GELU and ReLU outputs use all 256 levels), multiplies in
    int8 with 32-bit accumulation (``torch._int_mm``), and rescales. An
    optional ``inv_scale`` (SmoothQuant) multiplies the input first.

    Example:
        >>> layer = PerTokenInt8Linear(nn.Linear(64, 32))
        >>> layer(torch.randn(2, 5, 64)).shape
        torch.Size([2, 5, 32])
    """

    weight_int8: torch.Tensor
    """``(in_features, out_features)`` int8: the transposed weight ``_int_mm`` takes."""
    weight_scale: torch.Tensor
    weight_sums: torch.Tensor
    """Per output channel, the sum of its int8 weights: corrects for the zero point."""
    bias: torch.Tensor | None
    inv_scale: torch.Tensor | None

    def __init__(self, linear: nn.Linear, inv_scale: torch.Tensor | None = None) -> None:
        super().__init__()
        weight = linear.weight.detach().float()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        # Chosen here, not in forward, so that torch.compile traces no measurement.
        self.use_int_mm = int_mm_is_faster()
        scale = weight.abs().amax(dim=1).clamp(min=1e-12) / 127
        quantized = torch.round(weight / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight_int8", quantized.t().contiguous())
        self.register_buffer("weight_scale", scale)
        self.register_buffer("weight_sums", quantized.sum(dim=1, dtype=torch.int32).float())
        bias = None if linear.bias is None else linear.bias.detach().float().clone()
        self.register_buffer("bias", bias)
        self.register_buffer("inv_scale", inv_scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        rows = x.reshape(-1, shape[-1]).float()
        # a fresh tensor either way, so the steps below may work in place
        rows = rows * self.inv_scale if self.inv_scale is not None else rows.clone()
        low = rows.amin(dim=-1, keepdim=True).clamp_(max=0)
        high = rows.amax(dim=-1, keepdim=True).clamp_(min=0)
        scale = (high - low).clamp_(min=1e-12).div_(255)
        zero = low.div(scale).neg_().round_().sub_(128)  # int8 zero point, in [-128, 127]
        q = rows.mul_(scale.reciprocal()).add_(zero).round_().clamp_(-128, 127).to(torch.int8)
        if self.use_int_mm:
            y = torch._int_mm(q, self.weight_int8).float()
        else:
            y = torch.mm(q.float(), self.weight_int8.float())
        y = y.addcmul_(zero, self.weight_sums, value=-1).mul_(scale).mul_(self.weight_scale)
        if self.bias is not None:
            y = y.add_(self.bias)
        return y.reshape(*shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        smoothed = ", smoothed" if self.inv_scale is not None else ""
        return f"in_features={self.in_features}, out_features={self.out_features}{smoothed}"


class SmoothedLinear(nn.Module):
    """``linear(x * inv_scale)``: a Linear whose weight columns were multiplied by the scale."""

    inv_scale: torch.Tensor

    def __init__(self, inv_scale: torch.Tensor, linear: nn.Module) -> None:
        super().__init__()
        self.register_buffer("inv_scale", inv_scale)
        self.linear = linear

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x * self.inv_scale)  # type: ignore[no-any-return]


def int32_accumulation() -> bool:
    """Whether this CPU's int8 kernels accumulate in 32 bits (VNNI / AMX, or qnnpack)."""
    if torch.backends.quantized.engine == "qnnpack":
        return True
    try:
        cpuinfo = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in cpuinfo for flag in ("avx512_vnni", "avx_vnni", "amx_int8"))


@functools.cache
def int_mm_available() -> bool:
    """Whether ``torch._int_mm`` (int8 x int8 -> int32) runs on this CPU build of torch."""
    try:
        ones = torch.ones(3, 5, dtype=torch.int8)
        return int(torch._int_mm(ones, ones.t().contiguous())[0, 0]) == 5
    except (AttributeError, RuntimeError, NotImplementedError):
        return False


@functools.cache
def int_mm_is_faster() -> bool:
    """Whether ``torch._int_mm`` beats a float32 matmul of the same int8 values on
    this machine, for a transformer layer's shape (64 tokens, 384 to 1536)."""
    if not int_mm_available():
        return False
    generator = torch.Generator().manual_seed(0)
    rows = torch.randint(-128, 128, (64, 384), dtype=torch.int8, generator=generator)
    weight = torch.randint(-127, 128, (384, 1536), dtype=torch.int8, generator=generator)

    def best_of_three(run: Callable[[], torch.Tensor]) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            run()
            times.append(time.perf_counter() - start)
        return min(times)

    with torch.inference_mode():
        as_int = best_of_three(lambda: torch._int_mm(rows, weight))
        as_float = best_of_three(lambda: torch.mm(rows.float(), weight.float()))
    return as_int < as_float


def _linears(model: nn.Module) -> list[tuple[nn.Module, str, nn.Linear]]:
    """(parent, attribute, layer) for every plain ``nn.Linear`` (subclasses are left alone)."""
    return [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if type(child) is nn.Linear
    ]


def input_maxima(model: nn.Module, items: Sequence[Any]) -> dict[str, torch.Tensor]:
    """Per input channel, the largest ``|x|`` each Linear sees over the calibration inputs."""
    maxima: dict[str, torch.Tensor] = {}

    def hook(name: str) -> Callable[..., None]:
        def record(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            x = args[0].detach().float()
            seen = x.reshape(-1, x.shape[-1]).abs().amax(dim=0)
            maxima[name] = torch.maximum(maxima[name], seen) if name in maxima else seen

        return record

    handles = [
        module.register_forward_hook(hook(name))
        for name, module in model.named_modules()
        if type(module) is nn.Linear
    ]
    try:
        with torch.inference_mode():
            for item in items:
                call(model, item)
    finally:
        for handle in handles:
            handle.remove()
    return maxima


def smoothing_scale(linear: nn.Linear, seen: torch.Tensor, alpha: float) -> torch.Tensor:
    """SmoothQuant's per-input-channel ``s = max|x|^a / max|W|^(1-a)``."""
    weight_max = linear.weight.detach().abs().amax(dim=0).clamp(min=1e-5)
    return (seen.clamp(min=1e-5).pow(alpha) / weight_max.pow(1 - alpha)).clamp(min=1e-5)


def smooth(model: nn.Module, maxima: dict[str, torch.Tensor], alpha: float) -> None:
    """Moves activation outliers into the weights of every Linear with recorded inputs."""
    names = {id(module): name for name, module in model.named_modules()}
    for parent, attribute, linear in _linears(model):
        seen = maxima.get(names[id(linear)])
        if seen is None:
            continue  # never called on the calibration inputs
        scale = smoothing_scale(linear, seen, alpha)
        with torch.no_grad():
            linear.weight.mul_(scale.to(linear.weight.dtype))
        setattr(parent, attribute, SmoothedLinear((1 / scale).to(linear.weight.dtype), linear))


def per_token(model: nn.Module, maxima: dict[str, torch.Tensor], alpha: float | None) -> int:
    """Replaces every Linear by a :class:`PerTokenInt8Linear`, smoothed with ``alpha``."""
    by_id = {id(module): name for name, module in model.named_modules()}
    replaced = 0
    for parent, attribute, linear in _linears(model):
        inv_scale = None
        seen = maxima.get(by_id[id(linear)])
        if alpha is not None and seen is not None:
            scale = smoothing_scale(linear, seen, alpha)
            with torch.no_grad():
                linear.weight.mul_(scale.to(linear.weight.dtype))
            inv_scale = (1 / scale).float()
        setattr(parent, attribute, PerTokenInt8Linear(linear, inv_scale))
        replaced += 1
    return replaced


def quantize_linears(model: nn.Module) -> int:
    """Dynamic int8 in place, weights per output channel; returns the layers converted."""
    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    target = FullRangeDynamicLinear if int32_accumulation() else DynamicQuantizedLinear
    layers = len(_linears(model))
    with quiet_deprecations():
        quantize_dynamic(  # type: ignore[no-untyped-call]
            model,
            {nn.Linear: per_channel_dynamic_qconfig},
            dtype=torch.qint8,
            mapping={nn.Linear: target},
            inplace=True,
        )
    return layers


def convert(
    model: nn.Module, maxima: dict[str, torch.Tensor], alpha: float | None
) -> tuple[int, int]:
    """Smooths with ``alpha`` and quantizes in place; returns (per-tensor, per-token) counts.

    Per token wherever ``torch._int_mm`` runs; torch's per-tensor kernel elsewhere.
    """
    if int_mm_available():
        return 0, per_token(model, maxima, alpha)
    if alpha is not None:
        smooth(model, maxima, alpha)
    return quantize_linears(model), 0


@dataclass(frozen=True)
class Int8Result:
    model: nn.Module
    layers: int
    """How many ``nn.Linear`` were replaced."""
    per_token_layers: int
    """How many of them scale their input per row (token) rather than per tensor."""
    activation_bits: int
    """Bits of the per-tensor layers' activations (the per-token ones always use 8)."""
    alpha: float | None
    """The smoothing strength chosen, or None for none."""
    tried: dict[float | None, float]
    """The calibration fidelity of each smoothing strength tried (None: no smoothing)."""
    other_float_bytes: int
    """Bytes of floating-point parameters left as they were (embeddings, norms, convs)."""


def quantize_int8(
    model: nn.Module,
    items: Sequence[Any],
    score: Callable[[nn.Module], float],
) -> Int8Result:
    """Quantizes ``model`` (a copy the caller owns); with calibration, the best smoothing.

    ``score`` runs a candidate on the calibration inputs and returns its
    fidelity (higher is better). Without calibration inputs, no smoothing.
    """
    tried: dict[float | None, float] = {}
    best: tuple[float, float | None, nn.Module, int, int] | None = None
    maxima = input_maxima(model, items) if items else {}
    for alpha in (None, *ALPHAS) if maxima else (None,):
        candidate = copy.deepcopy(model) if maxima else model
        tensor_count, token_count = convert(candidate, maxima, alpha)
        if not maxima:
            best = (0.0, None, candidate, tensor_count, token_count)
            break
        tried[alpha] = score(candidate)
        if best is None or tried[alpha] > best[0]:
            best = (tried[alpha], alpha, candidate, tensor_count, token_count)
    assert best is not None
    _, alpha, chosen, tensor_count, token_count = best
    other = sum(p.numel() * p.element_size() for p in chosen.parameters() if p.is_floating_point())
    bits = 8 if int32_accumulation() else 7
    return Int8Result(chosen, tensor_count + token_count, token_count, bits, alpha, tried, other)
