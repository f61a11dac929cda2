"""Resource quantities, parsed and printed as ``k8s.io/apimachinery/pkg/api/resource`` does.

The grammar is ``<sign><digits>[.<digits>]<suffix>`` where the suffix is a binary SI one
(``Ki Mi Gi Ti Pi Ei``), a decimal SI one (``n u m "" k M G T P E``) or a decimal exponent
(``e3``, ``E-2``). ``"48GB"`` is refused, ``"48Gi"``, ``"500m"``, ``"1.5"`` and ``"49152Mi"``
are accepted. Values finer than a nano-unit are rounded up to one, as the API server does.
:meth:`Quantity.canonical` prints the canonical form that the API server's messages and
stored objects use (``"1.5"`` is ``1500m``, ``"49152Mi"`` is ``48Gi``, ``2000`` is ``2k``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

FORMAT_ERROR = (
    "quantities must match the regular expression '^([+-]?[0-9.]+)([eEinumkKMGTP]*[-+]?[0-9]*)$'"
)
SUFFIX_ERROR = "unable to parse quantity's suffix"

_BINARY = {"Ki": 1, "Mi": 2, "Gi": 3, "Ti": 4, "Pi": 5, "Ei": 6}
_DECIMAL = {"n": -9, "u": -6, "m": -3, "": 0, "k": 3, "M": 6, "G": 9, "T": 12, "P": 15, "E": 18}
_DECIMAL_BY_EXPONENT = {exponent: suffix for suffix, exponent in _DECIMAL.items()}
_BINARY_BY_POWER = {power: suffix for suffix, power in _BINARY.items()}
_NANO = Fraction(1, 10**9)


class QuantityError(ValueError):
    """A string that is not a quantity; its text is the API server's."""


@dataclass(frozen=True, slots=True)
class Quantity:
    """An exact value and the format it was written in (``BinarySI``, ``DecimalSI`` or
    ``DecimalExponent``), which decides how it prints."""

    value: Fraction
    format: str

    def canonical(self) -> str:
        if self.value == 0:
            return "0"
        if self.format == "BinarySI" and abs(self.value) >= 1024 and self.value.denominator == 1:
            number, power = abs(self.value.numerator), 0
            while number % 1024 == 0 and power < 6:
                number //= 1024
                power += 1
            sign = "-" if self.value < 0 else ""
            return f"{sign}{number}{_BINARY_BY_POWER.get(power, '')}"
        return _decimal(self.value, exponent_style=self.format == "DecimalExponent")

    def __str__(self) -> str:
        return self.canonical()


def _decimal(value: Fraction, *, exponent_style: bool) -> str:
    sign = "-" if value < 0 else ""
    magnitude = abs(value)
    exponent = -9
    while exponent < 18:
        scaled = magnitude / Fraction(10) ** (exponent + 3)
        if scaled.denominator != 1:
            break
        exponent += 3
    mantissa = magnitude / Fraction(10) ** exponent
    number = math.ceil(mantissa)
    if exponent_style:
        suffix = f"e{exponent}" if exponent else ""
    else:
        suffix = _DECIMAL_BY_EXPONENT[exponent]
    return f"{sign}{number}{suffix}"


def parse_quantity(text: str | int | float) -> Quantity:
    """Parses a quantity as the API server decodes one (a JSON number is read as its text)."""
    if isinstance(text, bool):
        raise QuantityError(FORMAT_ERROR)
    if isinstance(text, int | float):
        text = repr(text) if isinstance(text, float) else str(text)
    text = text.strip()
    if not text:
        raise QuantityError(FORMAT_ERROR)
    pos, end = 0, len(text)
    negative = False
    if text[pos] in "+-":
        negative = text[pos] == "-"
        pos += 1
    start = pos
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    whole = text[start:pos]
    fraction = ""
    if pos < end and text[pos] == ".":
        pos += 1
        start = pos
        while pos < end and text[pos].isdigit() and text[pos].isascii():
            pos += 1
        fraction = text[start:pos]
    if not whole and not fraction:
        raise QuantityError(FORMAT_ERROR)
    suffix_start = pos
    while pos < end and text[pos] in "eEinumkKMGTP":
        pos += 1
    if pos < end and text[pos] in "+-":
        pos += 1
    while pos < end and text[pos].isdigit() and text[pos].isascii():
        pos += 1
    if pos != end:
        raise QuantityError(FORMAT_ERROR)
    suffix = text[suffix_start:]
    number = Fraction(int(whole or "0"))
    if fraction:
        number += Fraction(int(fraction), 10 ** len(fraction))
    if suffix in _BINARY:
        value, form = number * 1024 ** _BINARY[suffix], "BinarySI"
    elif suffix in _DECIMAL:
        value, form = number * Fraction(10) ** _DECIMAL[suffix], "DecimalSI"
    elif len(suffix) > 1 and suffix[0] in "eE":
        try:
            exponent = int(suffix[1:])
        except ValueError:
            raise QuantityError(SUFFIX_ERROR) from None
        if abs(exponent) > 100:
            raise QuantityError(SUFFIX_ERROR)
        value, form = number * Fraction(10) ** exponent, "DecimalExponent"
    else:
        raise QuantityError(SUFFIX_ERROR)
    if value.denominator != 1 and (value / _NANO).denominator != 1:
        value = Fraction(math.ceil(value / _NANO)) * _NANO
    return Quantity(-value if negative else value, form)


def from_value(value: Fraction, form: str = "DecimalSI") -> Quantity:
    return Quantity(value, form)
