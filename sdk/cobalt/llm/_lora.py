"""LoRA adapters served on one base model, chosen per request.

An adapter trained with ``peft`` (``save_pretrained`` writes
``adapter_config.json`` and ``adapter_model.safetensors``) changes a
projection ``W`` into ``W + s * B @ A``, with ``A`` of shape ``[r, in]``,
``B`` of ``[out, r]`` and ``s = alpha / r``. Instead of merging it into a
copy of the base, the engine keeps the base once and adds ``s * B @ (A @ x)``
for the rows of a batch that asked for that adapter, so requests for
different adapters decode in the same batch.

Every adapter's ``A`` is stacked into one matrix per projection, and every
``B`` into another: a batch computes ``A @ x`` for all adapters at once,
zeroes the columns that belong to other adapters than each row's, and
multiplies by the stacked ``B``. That is two small multiplies per projection
however many adapters the batch mixes, and a row without an adapter gets
exactly zero added.

Files are read as untrusted input: only the LoRA options this arithmetic
implements are accepted, and every tensor's shape is checked against the base.

Example:
    >>> import torch
    >>> bank = LoraBank.empty(layers=1, shapes={"down": (4, [3])})
    >>> bank.adapters
    ()
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cobalt_common.errors import SpecError

FUSED: dict[str, tuple[str, int]] = {
    "q_proj": ("qkv", 0),
    "k_proj": ("qkv", 1),
    "v_proj": ("qkv", 2),
    "o_proj": ("out", 0),
    "gate_proj": ("gate_up", 0),
    "up_proj": ("gate_up", 1),
    "down_proj": ("down", 0),
}
"""Each Llama projection a LoRA may target: the fused multiply it is part of, and its place."""

MAX_ADAPTERS = 64
MAX_RANK = 256
_KEY = re.compile(
    r"^base_model\.model\.model\.layers\.(\d{1,4})\.(?:self_attn|mlp)\."
    r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.lora_([AB])\.weight$"
)
_REFUSED = {
    "use_dora": "DoRA",
    "lora_bias": "a LoRA bias",
    "modules_to_save": "fully trained modules (modules_to_save)",
    "trainable_token_indices": "trained token embeddings",
    "layer_replication": "layer replication",
    "target_parameters": "LoRA on parameters",
    "fan_in_fan_out": "fan_in_fan_out weights",
}


@dataclass(frozen=True)
class Adapter:
    """One adapter read from disk: per ``(layer, projection)``, ``A`` and ``s * B``."""

    name: str
    deltas: dict[tuple[int, str], tuple[torch.Tensor, torch.Tensor]]


def read_adapter(
    name: str, path: str | Path, layers: int, shapes: Mapping[str, tuple[int, int]]
) -> Adapter:
    """Read a ``peft`` LoRA adapter folder for a base of ``layers`` layers.

    Args:
        name: what requests call it.
        path: the folder ``save_pretrained`` wrote.
        layers: the base's number of layers.
        shapes: each projection's ``(out, in)`` in the base, such as
            ``{"q_proj": (576, 576), ...}``.

    Raises:
        SpecError: the folder is not a LoRA adapter for this base, or uses an
            option that cannot be served unmerged.
    """
    folder = Path(path)
    config = _config(name, folder)
    weights_file = folder / "adapter_model.safetensors"
    if not weights_file.is_file():
        raise SpecError(
            f"adapter {name!r}: {folder} has no adapter_model.safetensors; save the adapter "
            "with peft's save_pretrained (safetensors, the default)."
        )
    from safetensors.torch import load_file

    try:
        tensors = load_file(str(weights_file), device="cpu")
    except Exception as exc:  # a corrupt file is the user's to fix, not a crash
        raise SpecError(f"adapter {name!r}: {weights_file} cannot be read: {exc}") from exc
    pairs: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
    for key, tensor in tensors.items():
        match = _KEY.match(key)
        if match is None:
            raise SpecError(
                f"adapter {name!r} has a tensor {key[:120]!r} that is not a LoRA A or B of a "
                "Llama attention or MLP projection; only those are served unmerged (merge "
                "the adapter with peft's merge_and_unload and serve the result instead)."
            )
        layer, module, half = int(match[1]), match[2], match[3]
        if layer >= layers:
            raise SpecError(
                f"adapter {name!r} changes layer {layer}, and the base has {layers} layers; "
                "it was trained on another model."
            )
        pairs.setdefault((layer, module), {})[half] = tensor
    deltas = {}
    for (layer, module), pair in pairs.items():
        if set(pair) != {"A", "B"}:
            raise SpecError(
                f"adapter {name!r} has only lora_{''.join(pair)} for layer {layer} {module}."
            )
        a, b = pair["A"].float(), pair["B"].float()
        out_features, in_features = shapes[module]
        rank = int(a.shape[0]) if a.dim() == 2 else -1
        if (
            rank < 1
            or rank > MAX_RANK
            or tuple(a.shape) != (rank, in_features)
            or tuple(b.shape) != (out_features, rank)
        ):
            raise SpecError(
                f"adapter {name!r}: layer {layer} {module} has A {tuple(a.shape)} and B "
                f"{tuple(b.shape)}, and the base's projection is {in_features} -> "
                f"{out_features} (rank at most {MAX_RANK}); it was trained on another model."
            )
        if not (torch.isfinite(a).all() and torch.isfinite(b).all()):
            raise SpecError(f"adapter {name!r}: layer {layer} {module} has NaN or infinite values.")
        deltas[(layer, module)] = (a.contiguous(), (b * _scale(config, layer, module, rank)))
    if not deltas:
        raise SpecError(f"adapter {name!r} in {folder} changes no projection.")
    return Adapter(name, deltas)


def _config(name: str, folder: Path) -> dict[str, Any]:
    file = folder / "adapter_config.json"
    if not file.is_file():
        raise SpecError(
            f"adapter {name!r}: {folder} has no adapter_config.json; give the folder that "
            "peft's save_pretrained wrote."
        )
    try:
        config = json.loads(file.read_text())
    except (OSError, ValueError) as exc:
        raise SpecError(f"adapter {name!r}: {file} is not JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        raise SpecError(f"adapter {name!r}: {file} is not a LoRA adapter's config.")
    for option, what in _REFUSED.items():
        if config.get(option):
            raise SpecError(
                f"adapter {name!r} uses {what}, which is not served unmerged; merge it with "
                "peft's merge_and_unload and serve the result as its own model."
            )
    if config.get("bias", "none") != "none":
        raise SpecError(f"adapter {name!r} trains biases (bias={config['bias']!r}); merge it.")
    for option in ("lora_alpha", "r"):
        value = config.get(option)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise SpecError(f"adapter {name!r}: {option} must be a positive number, not {value!r}.")
    return config


def _scale(config: Mapping[str, Any], layer: int, module: str, rank: int) -> float:
    """``alpha / r`` (or ``alpha / sqrt(r)`` with rsLoRA), with peft's per-module patterns."""
    alpha = float(config["lora_alpha"])
    full = f"model.layers.{layer}.{'mlp' if module in _MLP else 'self_attn'}.{module}"
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if re.match(rf"(.*\.)?({pattern})$", full):
            alpha = float(value)
    return alpha / (math.sqrt(rank) if config.get("use_rslora") else rank)


_MLP = frozenset({"gate_proj", "up_proj", "down_proj"})


class LoraBank:
    """Every served adapter's matrices, stacked per layer and fused projection.

    Adapter ``i`` (counting from 1; 0 is the base) owns a span of columns in
    each fused projection's stack, the same span in every layer, so one mask
    per projection serves all layers.
    """

    def __init__(
        self,
        adapters: tuple[str, ...],
        a: dict[tuple[int, str], torch.Tensor],
        b: dict[tuple[int, str], torch.Tensor],
        owner: dict[str, torch.Tensor],
    ) -> None:
        self.adapters = adapters
        self._a, self._b, self._owner = a, b, owner

    @classmethod
    def empty(cls, layers: int, shapes: Mapping[str, tuple[int, list[int]]]) -> LoraBank:
        """A bank with no adapters (``shapes``: each fused projection's in-features and
        its parts' out-features)."""
        return cls.build([], layers, shapes)

    @classmethod
    def build(
        cls, adapters: list[Adapter], layers: int, shapes: Mapping[str, tuple[int, list[int]]]
    ) -> LoraBank:
        a: dict[tuple[int, str], torch.Tensor] = {}
        b: dict[tuple[int, str], torch.Tensor] = {}
        owner: dict[str, torch.Tensor] = {}
        for fused, (in_features, parts) in shapes.items():
            modules = [m for m, (f, _) in FUSED.items() if f == fused]
            spans = []  # (adapter index, module, part, rank), in column order
            for index, adapter in enumerate(adapters, start=1):
                for part, module in enumerate(modules):
                    rank = max(
                        (int(d[0].shape[0]) for (_, m), d in adapter.deltas.items() if m == module),
                        default=0,
                    )
                    if rank:
                        spans.append((index, module, part, rank))
            width = sum(rank for *_, rank in spans)
            owner[fused] = torch.tensor(
                [index for index, *_, rank in spans for _ in range(rank)], dtype=torch.long
            )
            offsets = [sum(parts[:p]) for p in range(len(parts))]
            for layer in range(layers):
                stack_a = torch.zeros(width, in_features)
                stack_b = torch.zeros(sum(parts), width)
                column = 0
                for index, module, part, rank in spans:
                    delta = adapters[index - 1].deltas.get((layer, module))
                    if delta is not None:
                        r = int(delta[0].shape[0])
                        stack_a[column : column + r] = delta[0]
                        stack_b[
                            offsets[part] : offsets[part] + parts[part], column : column + r
                        ] = delta[1]
                    column += rank
                a[(layer, fused)] = stack_a
                b[(layer, fused)] = stack_b
        return cls(tuple(adapter.name for adapter in adapters), a, b, owner)

    def masks(self, rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per fused projection, ``[rows, 1, columns]``: 1 where a column is the row's adapter's."""
        return {
            fused: (owner[None, :] == rows[:, None]).float()[:, None, :]
            for fused, owner in self._owner.items()
        }

    def add(
        self,
        layer: int,
        fused: str,
        x: torch.Tensor,
        y: torch.Tensor,
        masks: Mapping[str, torch.Tensor],
    ) -> None:
        """Add what the rows' adapters change in projection ``fused`` of ``layer`` to its
        output ``y`` (contiguous, ``[rows, width, out]``) for input ``x``, in place."""
        a = self._a[(layer, fused)]
        if not a.shape[0]:
            return
        low = (x @ a.T).mul_(masks[fused])
        y.view(-1, y.shape[-1]).addmm_(low.view(-1, low.shape[-1]), self._b[(layer, fused)].T)
