"""The "not set" sentinel.

An electron that does not mention an option inherits the lattice's value; an
electron that sets it to ``None`` means "none" (for example ``gpu=None``: no
GPU, even if the lattice asks for one). ``None`` therefore cannot mean "not
set", so options default to :data:`UNSET` instead.
"""

from __future__ import annotations

import enum
from typing import Final, Literal


class _Unset(enum.Enum):
    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset.UNSET
"""Marks an option the user did not set (distinct from ``None``)."""

UnsetType = Literal[_Unset.UNSET]
