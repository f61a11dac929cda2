"""Weight formats for one-row decoding on CPUs: fp32, bf16, int8 and 4-bit.

Decoding one token reads every weight once, so its speed is bound by weight
bytes, not arithmetic. The low-bit formats keep weights packed in memory and
multiply with torch's weight-only kernels, which want bf16 activations
(``_weight_int8pack_mm`` is about 8x slower with fp32 activations):

- ``"int8"``: one scale per output channel, symmetric;
- ``"int4"``: one scale and zero point per 32 inputs of each output channel,
  which is GGUF's Q4_1 layout, so a Q4_1 model loses nothing more.

Activations are rounded to bf16 only at the multiply's input; norms,
attention and the residual stream stay fp32. Which format keeps a model's
answers is measured, not assumed: see ``bench/llm_real.py``.

Example:
    >>> import torch
    >>> w = torch.randn(64, 128)
    >>> layer = PackedLinear.of(w, "int8")
    >>> x = torch.randn(2, 128)
    >>> bool(torch.allclose(layer(x), x @ w.T, rtol=0.05, atol=0.3))
    True
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import nn

from cobalt_common.errors import SpecError

WeightFormat = Literal["fp32", "bf16", "int8", "int4"]
FORMATS: tuple[WeightFormat, ...] = ("fp32", "bf16", "int8", "int4")
GROUP = 32
"""Inputs sharing one 4-bit scale and zero point (GGUF's Q4_1 block)."""
DEQUANTIZE_ROWS = 128
"""From this many input rows (a prefill), an int8 weight is expanded to fp32 for the one
multiply: fp32's matrix kernels then beat the int8 kernel, which is made for a few rows
(1,024 rows of a 576 -> 1,536 layer, measured on 2 AVX2 cores: 21 ms against 37 ms)."""


def checked_format(value: object) -> WeightFormat:
    if value not in FORMATS:
        raise SpecError(f"weights must be one of {', '.join(map(repr, FORMATS))}, not {value!r}.")
    return value


class PackedLinear(nn.Module):
    """``x @ weight.T`` with the weight held in one of :data:`FORMATS`."""

    weight: torch.Tensor
    scale: torch.Tensor
    scale_zero: torch.Tensor

    def __init__(self, fmt: WeightFormat, out_features: int, in_features: int) -> None:
        super().__init__()
        self.fmt = fmt
        self.out_features, self.in_features = out_features, in_features

    @classmethod
    def of(cls, weight: torch.Tensor, fmt: WeightFormat) -> PackedLinear:
        """Pack a float ``[out, in]`` weight (in fp32 where its shape does not suit ``fmt``)."""
        fmt = packable(fmt, weight)
        out_features, in_features = weight.shape
        layer = cls(fmt, int(out_features), int(in_features))
        w = weight.detach().float().contiguous()
        if fmt == "fp32":
            layer.register_buffer("weight", w)
        elif fmt == "bf16":
            layer.register_buffer("weight", w.to(torch.bfloat16))
        elif fmt == "int8":
            scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12)
            layer.register_buffer("weight", (w / scale[:, None]).round().to(torch.int8))
            layer.register_buffer("scale", scale.to(torch.bfloat16))
        else:
            packed, scale_zero = _int4(w)
            layer.register_buffer("weight", packed)
            layer.register_buffer("scale_zero", scale_zero)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fmt == "fp32":
            return nn.functional.linear(x, self.weight)
        if self.fmt == "int8" and x.numel() >= DEQUANTIZE_ROWS * self.in_features:
            expanded = self.weight.float() * self.scale.float()[:, None]
            return nn.functional.linear(x, expanded)
        shape = x.shape
        flat = x.reshape(-1, shape[-1]).to(torch.bfloat16)
        if self.fmt == "bf16":
            out = nn.functional.linear(flat, self.weight)
        elif self.fmt == "int8":
            out = torch._weight_int8pack_mm(flat, self.weight, self.scale)
        else:
            out = torch._weight_int4pack_mm_for_cpu(flat, self.weight, GROUP, self.scale_zero)
        return out.float().reshape(*shape[:-1], self.out_features)

    def bytes(self) -> int:
        return sum(int(b.numel() * b.element_size()) for b in self.buffers())

    def extra_repr(self) -> str:
        return f"{self.in_features} -> {self.out_features}, {self.fmt}"


def packable(fmt: WeightFormat, weight: torch.Tensor) -> WeightFormat:
    """``fmt``, or ``"fp32"`` where a ``[out, in]`` weight's shape does not suit it."""
    out_features, in_features = weight.shape
    if fmt == "int4" and (in_features % GROUP or out_features % 16):
        return "fp32"
    return fmt


def _int4(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric 4-bit groups of :data:`GROUP`, in torch's packed CPU layout."""
    out_features, in_features = w.shape
    groups = w.reshape(out_features, in_features // GROUP, GROUP)
    low = groups.amin(dim=-1, keepdim=True)
    high = groups.amax(dim=-1, keepdim=True)
    scale = ((high - low) / 15).clamp(min=1e-12)
    q = ((groups - low) / scale).round().clamp(0, 15).to(torch.int32)
    packed = torch._convert_weight_to_int4pack_for_cpu(q.reshape(out_features, in_features), 1)
    zero = low + 8 * scale  # the kernel computes (q - 8) * scale + zero
    scale_zero = torch.stack([scale[..., 0].T, zero[..., 0].T], dim=-1)
    return packed, scale_zero.to(torch.bfloat16).contiguous()
