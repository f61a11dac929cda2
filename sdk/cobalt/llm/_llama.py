"""A compact forward pass for Llama-family models, made for serving on CPUs.

``transformers``' own forward is written for every model and every device;
decoding one token through it spends much of its time outside the matrix
multiplies. This one keeps the model's weights and does only what a Llama
does, with fewer and larger multiplies:

- query, key and value projections are one multiply, and so are the gate
  and up projections;
- weights can be held in a low-bit format (:mod:`cobalt.llm._weights`);
- rotary embeddings come from a table, not from trigonometry per step;
- a prefill computes logits only for the positions asked for.

It is called as the ``transformers`` model is (``input_ids``,
``attention_mask``, ``position_ids``, ``past_key_values``), and fills the
same cache, so the engine's batching, prefix cache and speculation run on
it unchanged. :func:`unsupported` says why a model cannot use it; the
engine then keeps ``transformers``' forward.

Example:
    >>> import torch, cobalt as ct
    >>> model, _ = ct.llm.random_model(seed=0)
    >>> fast = FastLlama(model, "fp32")
    >>> ids = torch.tensor([[5, 6, 7]])
    >>> bool(torch.allclose(fast(input_ids=ids).logits, model(input_ids=ids).logits, atol=1e-4))
    True
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache

from cobalt.llm._lora import LoraBank, read_adapter
from cobalt.llm._weights import PackedLinear, WeightFormat


@dataclass
class Output:
    """What the engine reads from a forward pass."""

    logits: torch.Tensor
    past_key_values: DynamicCache


def unsupported(model: Any) -> str | None:
    """Why ``model`` cannot run on :class:`FastLlama`, or ``None`` when it can."""
    config: Any = getattr(model, "config", None)
    if getattr(config, "model_type", None) != "llama":
        return f"it is a {getattr(config, 'model_type', type(model).__name__)!r} model, not a Llama"
    if getattr(config, "attention_bias", False) or getattr(config, "mlp_bias", False):
        return "its projections have biases"
    if getattr(config, "hidden_act", "silu") != "silu":
        return f"its activation is {config.hidden_act!r}, not silu"
    if next(model.parameters()).device.type != "cpu":
        return "it is not on a CPU"
    return None


class _Layer(nn.Module):
    def __init__(self, layer: Any, fmt: WeightFormat) -> None:
        super().__init__()
        attn, mlp = layer.self_attn, layer.mlp

        def pack(*weights: torch.Tensor) -> PackedLinear:
            weight = torch.cat([w.detach() for w in weights])
            return PackedLinear.of(weight, fmt)

        self.qkv = pack(attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight)
        self.out = pack(attn.o_proj.weight)
        self.gate_up = pack(mlp.gate_proj.weight, mlp.up_proj.weight)
        self.down = pack(mlp.down_proj.weight)
        self.attn_norm = layer.input_layernorm.weight.detach().float()
        self.mlp_norm = layer.post_attention_layernorm.weight.detach().float()
        self.intermediate = int(mlp.gate_proj.weight.shape[0])


class FastLlama(nn.Module):
    """A Llama's forward pass over its own weights, in the weight format asked for."""

    def __init__(self, model: Any, weights: WeightFormat = "fp32") -> None:
        super().__init__()
        reason = unsupported(model)
        if reason is not None:
            raise ValueError(f"FastLlama cannot run this model: {reason}.")
        config = model.config
        self.config = config
        self.generation_config = getattr(model, "generation_config", None)
        self.weights = weights
        inner = model.model
        self.heads = int(config.num_attention_heads)
        self.kv_heads = int(getattr(config, "num_key_value_heads", None) or self.heads)
        self.head_dim = int(
            getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        )
        self.eps = float(config.rms_norm_eps)
        self.embed = nn.Embedding.from_pretrained(  # type: ignore[no-untyped-call]
            inner.embed_tokens.weight.detach().float()
        )
        self.blocks = [_Layer(layer, weights) for layer in inner.layers]
        self.layers = nn.ModuleList(self.blocks)
        self.norm = inner.norm.weight.detach().float()
        self.lm_head = PackedLinear.of(model.lm_head.weight, weights)
        rotary = inner.rotary_emb
        positions = int(getattr(config, "max_position_embeddings", 2048) or 2048)
        freqs = torch.outer(torch.arange(positions, dtype=torch.float), rotary.inv_freq.float())
        table = torch.cat([freqs, freqs], dim=-1)
        scaling = float(getattr(rotary, "attention_scaling", 1.0))
        self.cos = table.cos() * scaling
        self.sin = table.sin() * scaling
        hidden, q_size = int(config.hidden_size), self.heads * self.head_dim
        kv_size, inter = self.kv_heads * self.head_dim, self.blocks[0].intermediate
        self._projections = {
            "q_proj": (q_size, hidden),
            "k_proj": (kv_size, hidden),
            "v_proj": (kv_size, hidden),
            "o_proj": (hidden, q_size),
            "gate_proj": (inter, hidden),
            "up_proj": (inter, hidden),
            "down_proj": (hidden, inter),
        }
        self._fused = {
            "qkv": (hidden, [q_size, kv_size, kv_size]),
            "out": (q_size, [hidden]),
            "gate_up": (hidden, [inter, inter]),
            "down": (inter, [hidden]),
        }
        self.lora = LoraBank.empty(len(self.blocks), self._fused)

    def load_adapters(self, adapters: dict[str, str]) -> None:
        """Serve these LoRA adapters (name to ``peft`` folder); requests pick one by its
        number in :attr:`lora`'s ``adapters``, counting from 1, in ``forward(adapters=)``.

        Raises:
            SpecError: a folder is not a LoRA adapter this model can serve.
        """
        read = [
            read_adapter(name, path, len(self.blocks), self._projections)
            for name, path in adapters.items()
        ]
        self.lora = LoraBank.build(read, len(self.blocks), self._fused)

    def weight_bytes(self) -> int:
        """Bytes of weights one decoding step reads (the embedding is looked up, not read)."""
        return sum(m.bytes() for m in self.modules() if isinstance(m, PackedLinear))

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: DynamicCache | None = None,
        use_cache: bool = True,
        logits_to_keep: int = 0,
        adapters: torch.Tensor | None = None,
        **_: Any,
    ) -> Output:
        """One pass; ``adapters`` gives each row's adapter (0 for none, see
        :meth:`load_adapters`)."""
        cache = past_key_values if past_key_values is not None else DynamicCache()
        rows, width = input_ids.shape
        past = cache.get_seq_length() if past_key_values is not None else 0
        total = past + width
        if position_ids is None:
            position_ids = torch.arange(past, total)[None, :].expand(rows, width)
        if attention_mask is None:
            attention_mask = torch.ones(rows, total, dtype=torch.long)
        mask = _mask(attention_mask, width)
        cos = self.cos[position_ids][:, :, None]  # [rows, width, 1, head_dim]
        sin = self.sin[position_ids][:, :, None]
        x = self.embed(input_ids)
        heads, kv_heads = self.heads, self.kv_heads
        q_size = heads * self.head_dim
        masks = None
        if adapters is not None and self.lora.adapters and bool(adapters.any()):
            masks = self.lora.masks(adapters)

        def project(linear: PackedLinear, index: int, fused: str, h: torch.Tensor) -> torch.Tensor:
            y: torch.Tensor = linear(h)
            if masks is not None:
                y = y.contiguous()
                self.lora.add(index, fused, h, y, masks)
            return y

        for index, layer in enumerate(self.blocks):
            h = nn.functional.rms_norm(x, (x.shape[-1],), layer.attn_norm, self.eps)
            qkv = project(layer.qkv, index, "qkv", h)
            qkv = qkv.view(rows, width, heads + 2 * kv_heads, self.head_dim)
            qk = _rotate(qkv[:, :, : heads + kv_heads], cos, sin)  # queries and keys at once
            q = qk[:, :, :heads].transpose(1, 2)
            k = qk[:, :, heads:].transpose(1, 2)
            v = qkv[:, :, heads + kv_heads :].transpose(1, 2)
            keys, values = cache.update(k, v, index)
            attended = nn.functional.scaled_dot_product_attention(
                q, keys, values, attn_mask=mask, enable_gqa=self.kv_heads != self.heads
            )
            attended = attended.transpose(1, 2).reshape(rows, width, q_size)
            x = x + project(layer.out, index, "out", attended)
            h = nn.functional.rms_norm(x, (x.shape[-1],), layer.mlp_norm, self.eps)
            gate_up = project(layer.gate_up, index, "gate_up", h)
            gate, up = gate_up[..., : layer.intermediate], gate_up[..., layer.intermediate :]
            x = x + project(layer.down, index, "down", nn.functional.silu(gate) * up)
        if logits_to_keep:
            x = x[:, -logits_to_keep:]
        x = nn.functional.rms_norm(x, (x.shape[-1],), self.norm, self.eps)
        return Output(self.lm_head(x), cache)


def _rotate(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _mask(attention_mask: torch.Tensor, width: int) -> torch.Tensor:
    """``[rows, 1, width, columns]``: which columns each new token may attend to.

    A column is visible when the row's mask keeps it and it is not after the
    token itself; the last ``width`` columns are the new tokens. A token always
    sees itself, so a padding token's attention is finite rather than NaN.
    """
    columns = attention_mask.shape[1]
    keep = attention_mask.bool()[:, None, None, :]
    if width == 1:
        return keep
    query = torch.arange(width, device=attention_mask.device)[:, None] + (columns - width)
    column = torch.arange(columns, device=attention_mask.device)[None, :]
    return (keep & (column <= query)[None, None]) | (column == query)[None, None]
