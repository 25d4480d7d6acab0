"""Typed checks for values read from files, one place for every file kind's schema.

Each function returns the value in the type asked for or raises a one-line `FormatError`
naming the field, the file (``where``) and the value; nothing read from a file should reach
arithmetic, an allocation or C code without passing through one of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from .errors import FormatError

MAX_COUNT = 1 << 31  # the largest count (dimension, length, id) a file may give
_HINT = "the file is broken; restore it"


def _show(value: Any) -> str:
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 1 << 128:
        return f"an integer of {value.bit_length()} bits"
    try:
        text = repr(value)
    except (ValueError, RecursionError):
        return f"a {type(value).__name__}"
    return text if len(text) <= 40 else text[:37] + "..."


def count(value: Any, name: str, where: str, *, low: int = 1, high: int = MAX_COUNT, hint: str = _HINT) -> int:
    """``value`` as an int in ``low..high`` (bools and floats refused)."""
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise FormatError(f"{where}: {name} = {_show(value)} is not an integer in {low}..{high}", hint)
    return value


def real(
    value: Any,
    name: str,
    where: str,
    *,
    low: float = -math.inf,
    high: float = math.inf,
    low_open: bool = False,
    hint: str = _HINT,
) -> float:
    """``value`` as a finite float in ``[low, high]`` (``(low, high]`` with ``low_open``)."""
    ok = not isinstance(value, bool) and isinstance(value, (int, float))
    x = float(value) if ok and (not isinstance(value, int) or abs(value) < 1 << 1000) else math.nan
    if not (math.isfinite(x) and (x > low if low_open else x >= low) and x <= high):
        bound = f"{'(' if low_open else '['}{low:g}, {high:g}]"
        raise FormatError(f"{where}: {name} = {_show(value)} is not a finite number in {bound}", hint)
    return x


def positive(value: Any, name: str, where: str, *, high: float = 1e30, hint: str = _HINT) -> float:
    """``value`` as a finite float > 0 (an epsilon, a frequency base, a scale)."""
    return real(value, name, where, low=0.0, high=high, low_open=True, hint=hint)


def text(value: Any, name: str, where: str, *, max_len: int = 1 << 20, hint: str = _HINT) -> str:
    """``value`` as a str of at most ``max_len`` characters."""
    if not isinstance(value, str) or len(value) > max_len:
        raise FormatError(f"{where}: {name} = {_show(value)} is not a text of at most {max_len} characters", hint)
    return value


def mapping(value: Any, name: str, where: str, *, hint: str = _HINT) -> Mapping[str, Any]:
    """``value`` as a mapping with str keys (a JSON object)."""
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise FormatError(f"{where}: {name} is {type(value).__name__}, expected an object", hint)
    return value


def divides(part: int, whole: int, what: str, where: str, *, hint: str = _HINT) -> None:
    """`FormatError` unless ``part`` divides ``whole`` (e.g. heads into the hidden size)."""
    if part <= 0 or whole % part:
        raise FormatError(f"{where}: {what}: {part} does not divide {whole}", hint)
