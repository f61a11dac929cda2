"""Reusing the key/value cache of prompts that start the same way.

After a prompt is prefilled its keys and values are kept, up to a budget of
tokens, least recently used first out. A new prompt reuses the longest
common start with any kept prompt, so only its remainder is run through the
model. A system prompt shared by every chat request is computed once.

Keys and values of a prefix depend only on the prefix (the models are
causal) and on the LoRA adapter that computed them, so entries are kept per
adapter, and reuse changes nothing but the time to the first token.

Example:
    >>> import torch
    >>> cache = PrefixCache(max_tokens=100)
    >>> layer = (torch.zeros(1, 1, 6, 2), torch.zeros(1, 1, 6, 2))
    >>> cache.store([1, 2, 3, 4, 5, 6], [layer])
    >>> n, layers = cache.lookup([1, 2, 3, 4, 5, 9, 9])
    >>> n, layers[0][0].shape[2]
    (5, 5)
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

from cobalt.llm._kv import LayerKV

_MIN_REUSE = 4  # shorter common starts are not worth a copy


def _common_start(a: tuple[int, ...], b: tuple[int, ...]) -> int:
    if a[: len(b)] == b[: len(a)]:
        return min(len(a), len(b))
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return min(len(a), len(b))


class PrefixCache:
    """Prompts' keys and values, looked up by longest common start."""

    def __init__(self, max_tokens: int = 16384) -> None:
        self.max_tokens = max_tokens
        self._entries: OrderedDict[tuple[int, tuple[int, ...]], list[LayerKV]] = OrderedDict()
        self._tokens = 0

    def lookup(self, prompt: Sequence[int], adapter: int = 0) -> tuple[int, list[LayerKV]]:
        """The number of prompt tokens covered, and their layers; (0, []) on a miss.

        Only prompts prefilled with the same ``adapter`` are reused.

        At least the prompt's last token is always left to compute, since its
        logits give the first generated token.
        """
        best, best_key = 0, None
        query = tuple(prompt[:-1])
        for key in self._entries:
            owner, tokens = key
            if owner != adapter or min(len(tokens), len(query)) <= best:
                continue
            common = _common_start(tokens, query)
            if common > best:
                best, best_key = common, key
        if best_key is None or best < _MIN_REUSE:
            return 0, []
        self._entries.move_to_end(best_key)
        layers = self._entries[best_key]
        return best, [(k[:, :, :best], v[:, :, :best]) for k, v in layers]

    def store(self, prompt: Sequence[int], layers: list[LayerKV], adapter: int = 0) -> None:
        """Keep a prefilled prompt's layers (one row, no padding)."""
        tokens = tuple(prompt)
        if len(tokens) < _MIN_REUSE or len(tokens) > self.max_tokens:
            return
        key = (adapter, tokens)
        if key in self._entries:
            self._entries.move_to_end(key)
            return
        self._entries[key] = layers
        self._tokens += len(tokens)
        while self._tokens > self.max_tokens:
            (_, old), _ = self._entries.popitem(last=False)
            self._tokens -= len(old)
