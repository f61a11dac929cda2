"""The key/value cache of a running batch, one row per sequence.

Rows have different lengths, so the cache is a rectangle ``[rows, heads,
columns, head_dim]`` per layer with an attention mask ``[rows, columns]``:
a new row is padded on the left, and a column that holds a rejected
speculative token is masked out rather than removed. Each row keeps its own
count of valid tokens, which is the position of its next token, so masked
columns change nothing the model computes. When masked columns pile up the
cache is compacted: each row's valid columns are gathered to the right.

The model code (``transformers``) does the attention; this module only keeps
the rectangle consistent.

Example:
    >>> import torch
    >>> kv = BatchKV.empty()
    >>> layer = (torch.ones(1, 2, 3, 4), torch.ones(1, 2, 3, 4))
    >>> kv.add_rows([[layer]], lengths=[3])
    >>> kv.add_rows([[(torch.ones(1, 2, 5, 4), torch.ones(1, 2, 5, 4))]], lengths=[5])
    >>> kv.rows, kv.columns, kv.mask.tolist()
    (2, 5, [[0, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

LayerKV = tuple[torch.Tensor, torch.Tensor]

_SPARE = 64
"""Columns a layer's buffer grows by, at least, when a step does not fit."""


class GrowingLayer(DynamicLayer):  # type: ignore[no-untyped-call]
    """A cache layer that appends in place, into a buffer with spare columns.

    ``transformers``' own layer concatenates on every step, copying the whole
    cache of every layer each time; this one copies only when its buffer is
    full, and then doubles it. ``keys`` and ``values`` read as the filled
    columns; setting them replaces the buffer.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.device = keys.device
        self.is_initialized = True
        self._keys, self._values, self._filled = keys, values, int(keys.shape[2])

    @property
    def keys(self) -> torch.Tensor:
        return self._keys[:, :, : self._filled]

    @keys.setter
    def keys(self, value: torch.Tensor | None) -> None:
        if value is not None:
            self._keys, self._filled = value, int(value.shape[2])

    @property
    def values(self) -> torch.Tensor:
        return self._values[:, :, : self._filled]

    @values.setter
    def values(self, value: torch.Tensor | None) -> None:
        if value is not None:
            self._values = value

    def update(
        self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any
    ) -> tuple[torch.Tensor, torch.Tensor]:
        start = self._filled
        end = start + int(key_states.shape[2])
        if end > self._keys.shape[2]:
            room = max(end + _SPARE, 2 * start)
            self._keys = _grown(self._keys, start, room)
            self._values = _grown(self._values, start, room)
        self._keys[:, :, start:end] = key_states
        self._values[:, :, start:end] = value_states
        self._filled = end
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._filled


def _grown(buffer: torch.Tensor, filled: int, room: int) -> torch.Tensor:
    shape = list(buffer.shape)
    shape[2] = room
    grown = buffer.new_empty(shape)
    grown[:, :, :filled] = buffer[:, :, :filled]
    return grown


def growing_cache(layers: Sequence[LayerKV]) -> DynamicCache:
    """A cache holding these layers' keys and values, appended to in place."""
    cache = DynamicCache()
    cache.layers = [GrowingLayer(k, v) for k, v in layers]
    return cache


class BatchKV:
    """Per-layer keys and values of all running rows, with their mask and lengths."""

    def __init__(self, cache: DynamicCache | None, mask: torch.Tensor, lengths: torch.Tensor):
        self.cache = cache
        self.mask = mask
        self.lengths = lengths

    @classmethod
    def empty(cls) -> BatchKV:
        return cls(None, torch.zeros(0, 0, dtype=torch.long), torch.zeros(0, dtype=torch.long))

    @property
    def rows(self) -> int:
        return int(self.mask.shape[0])

    @property
    def columns(self) -> int:
        return int(self.mask.shape[1])

    def layers(self) -> list[LayerKV]:
        if self.cache is None:
            return []
        return [(layer.keys, layer.values) for layer in _layers(self.cache)]

    def add_rows(self, rows: Sequence[Sequence[LayerKV]], lengths: Sequence[int]) -> None:
        """Append rows, each given as its layers' (keys, values) of one row with no holes."""
        if not rows:
            return
        device = rows[0][0][0].device
        width = max([self.columns, *(int(r[0][0].shape[2]) for r in rows)])
        masks = [_pad_left(self.mask, width)] if self.rows else []
        for row in rows:
            n = int(row[0][0].shape[2])
            masks.append(
                torch.cat(
                    [
                        torch.zeros(1, width - n, dtype=torch.long, device=device),
                        torch.ones(1, n, dtype=torch.long, device=device),
                    ],
                    dim=1,
                )
            )
        existing = self.layers() if self.rows else []
        layers = []
        for index in range(len(rows[0])):
            parts_k, parts_v = [], []
            if existing:
                parts_k.append(_pad_left(existing[index][0], width))
                parts_v.append(_pad_left(existing[index][1], width))
            for row in rows:
                parts_k.append(_pad_left(row[index][0], width))
                parts_v.append(_pad_left(row[index][1], width))
            layers.append((torch.cat(parts_k), torch.cat(parts_v)))
        self._set(layers)
        self.mask = torch.cat(masks)
        self.lengths = torch.cat(
            [self.lengths.to(device), torch.tensor(list(lengths), dtype=torch.long, device=device)]
        )

    def keep_rows(self, indices: Sequence[int]) -> None:
        """Keep only these rows, in this order."""
        if len(indices) == self.rows:
            return
        if not indices:
            self.cache, self.mask = None, self.mask[:0, :0]
            self.lengths = self.lengths[:0]
            return
        index = torch.tensor(list(indices), dtype=torch.long, device=self.mask.device)
        self._set([(k[index], v[index]) for k, v in self.layers()])
        self.mask = self.mask[index]
        self.lengths = self.lengths[index]
        self.trim()

    def step_inputs(self, width: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The attention mask and position ids for feeding ``width`` new tokens to each row."""
        new = torch.ones(self.rows, width, dtype=torch.long, device=self.mask.device)
        mask = torch.cat([self.mask, new], dim=1)
        offsets = torch.arange(width, device=self.mask.device)
        return mask, self.lengths[:, None] + offsets[None, :]

    def appended(self, width: int, valid: torch.Tensor, *, compact: bool = True) -> None:
        """Record ``width`` columns the model appended; the first ``valid[r]`` count for row r."""
        columns = torch.arange(width, device=self.mask.device)[None, :]
        self.mask = torch.cat([self.mask, (columns < valid[:, None]).long()], dim=1)
        self.lengths = self.lengths + valid
        if compact:
            self._maybe_compact()

    def append_masked(self, columns: torch.Tensor) -> None:
        """Record columns the model appended, with their own 0/1 mask ``[rows, width]``."""
        self.mask = torch.cat([self.mask, columns], dim=1)
        self.lengths = self.lengths + columns.sum(dim=1)

    def settle(self, width: int, valid: torch.Tensor) -> None:
        """Of the last ``width`` columns (all counted so far), keep the first ``valid[r]``."""
        columns = torch.arange(width, device=self.mask.device)[None, :]
        self.mask[:, -width:] = (columns < valid[:, None]).long()
        self.lengths = self.lengths - width + valid
        self._maybe_compact()

    def _maybe_compact(self) -> None:
        if self.columns > 2 * int(self.lengths.max()) + 32:
            self.compact()

    def trim(self) -> None:
        """Drop leading columns no row uses."""
        if not self.rows:
            return
        used = self.mask.any(dim=0).nonzero()
        start = int(used[0]) if len(used) else self.columns
        if start:
            self._set([(k[:, :, start:], v[:, :, start:]) for k, v in self.layers()])
            self.mask = self.mask[:, start:]

    def compact(self) -> None:
        """Move each row's valid columns to the right, in order, and drop the rest."""
        width = int(self.lengths.max())
        order = torch.argsort(self.mask, dim=1, stable=True)[:, -width:]
        gather = order[:, None, :, None]
        layers = []
        for k, v in self.layers():
            index = gather.expand(k.shape[0], k.shape[1], width, k.shape[3])
            layers.append((k.gather(2, index), v.gather(2, index)))
        self._set(layers)
        self.mask = self.mask.gather(1, order)

    def _set(self, layers: list[LayerKV]) -> None:
        if self.cache is None:
            self.cache = growing_cache(layers)
            return
        for layer, (k, v) in zip(_layers(self.cache), layers, strict=True):
            layer.keys, layer.values = k, v


def _layers(cache: DynamicCache) -> list[Any]:
    """The cache's layer objects (full-attention layers with ``keys`` and ``values``)."""
    return list(cache.layers)


def _pad_left(tensor: torch.Tensor, width: int) -> torch.Tensor:
    """Pad dimension 1 (masks) or 2 (keys, values) on the left with zeros up to ``width``."""
    dim = 1 if tensor.dim() == 2 else 2
    missing = width - int(tensor.shape[dim])
    if missing <= 0:
        return tensor
    shape = list(tensor.shape)
    shape[dim] = missing
    return torch.cat([tensor.new_zeros(shape), tensor], dim=dim)


def row_layers(cache: DynamicCache, row: int = 0, length: int | None = None) -> list[LayerKV]:
    """One row's (keys, values) per layer from a model's cache, optionally its last ``length``."""
    out = []
    for layer in _layers(cache):
        k, v = layer.keys[row : row + 1], layer.values[row : row + 1]
        if length is not None:  # a copy: the padded batch it comes from can then be freed
            k, v = k[:, :, -length:].clone(), v[:, :, -length:].clone()
        out.append((k, v))
    return out
