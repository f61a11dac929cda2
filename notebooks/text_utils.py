"""Small text helpers that ``errors_and_debugging.ipynb`` imports and uses inside a task.

This module is not installed: it sits next to the notebooks, so a worker could not
import it by name. cobalt pickles the code of such local modules by value when it
dispatches, so tasks can use them like any other import.
"""

from __future__ import annotations

import re
from collections import Counter

STOP_WORDS = frozenset({"a", "an", "and", "in", "is", "it", "of", "on", "the", "to"})


def words(text: str) -> list[str]:
    """The lower-cased words of ``text``, without punctuation or stop words."""
    return [w for w in re.findall(r"[a-z0-9']+", text.lower()) if w not in STOP_WORDS]


def most_common_words(text: str, n: int = 3) -> list[tuple[str, int]]:
    """The ``n`` most frequent words of ``text`` with their counts, most frequent first."""
    return Counter(words(text)).most_common(n)
