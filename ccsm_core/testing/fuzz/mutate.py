"""Hypothesis strategies that break valid files: byte-level mutations (flips, truncation,
interesting integers over header fields) and structured ones on JSON-like values (wrong types,
0, negative, NaN, inf, 2^31, 2^64, huge strings, deep nesting, missing and unknown keys)."""

from __future__ import annotations

import copy
import json
import math
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import strategies as st

INTERESTING_INTS = (0, 1, -1, 2, 3, 7, 255, 256, 2**15, 2**16, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**53)
HUGE_INTS = (2**63 - 1, 2**63, 2**64 - 1, 2**64, -(2**31), -(2**63), 10**40)
INTERESTING_FLOATS = (0.0, -0.0, -1.0, 1e-300, -1e-300, 1e308, -1e308, 0.5, math.nan, math.inf, -math.inf)
# in range for a "positive number" check, out of range for what float32 arithmetic makes of it
EXTREME_POSITIVES = (5e-324, 1e-300, 1e-45, 1e-38, 1e-8, 1e20, 1e30, 3.4e38, 1e300, 2**24 + 1, 2**31 - 1)
_WORDS = (0, 1, 0x7F, 0x80, 0xFF, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF, 2**63, 2**64 - 1)


class Raw:
    """JSON text placed as is by `dumps` (numbers of 5,000 digits, nesting deeper than any
    recursive writer allows, bare NaN)."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"Raw({self.text[:30]!r}{'...' if len(self.text) > 30 else ''})"


def dumps(value: Any) -> str:
    """JSON text of ``value`` where `Raw` pieces are inserted verbatim (NaN/Infinity allowed)."""
    if isinstance(value, Raw):
        return value.text
    if isinstance(value, dict):
        return "{" + ",".join(f"{json.dumps(str(k))}:{dumps(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(dumps(v) for v in value) + "]"
    if isinstance(value, int) and not isinstance(value, bool) and abs(value) >= 10**4000:
        return Raw(str(value)).text
    return json.dumps(value, allow_nan=True)


def deep(kind: str, depth: int) -> Raw:
    """Nesting ``depth`` levels deep: ``[[[...]]]`` or ``{"a":{"a":...}}``."""
    if kind == "list":
        return Raw("[" * depth + "]" * depth)
    return Raw('{"a":' * depth + "1" + "}" * depth)


def hostile_scalars() -> st.SearchStrategy[Any]:
    """Values no field should accept unchecked."""
    return st.one_of(
        st.sampled_from(INTERESTING_INTS + HUGE_INTS),
        st.sampled_from(INTERESTING_FLOATS),
        st.integers(),
        st.floats(allow_nan=True, allow_infinity=True),
        st.sampled_from(["", "two", "1e400", "nan", "-1", "\ud800", "é" * 3, "{{ 'x' * 99 }}"]),
        st.text(max_size=20),
        st.sampled_from([None, True, False]),
    )


def hostile_values() -> st.SearchStrategy[Any]:
    """Scalars plus wrong container types, huge strings and numbers, and deep nesting."""
    return st.one_of(
        hostile_scalars(),
        st.sampled_from([[], {}, [1, 2], {"a": 1}, [None], [[1]]]),
        st.lists(hostile_scalars(), max_size=4),
        st.dictionaries(st.text(max_size=5), hostile_scalars(), max_size=3),
        st.builds(lambda n: "x" * n, st.sampled_from([1 << 10, 1 << 16, 1 << 20])),
        st.builds(lambda n: Raw("9" * n), st.sampled_from([65, 400, 4301, 5000])),
        st.builds(lambda n: Raw("1e" + "9" * n), st.sampled_from([3, 400])),
        st.sampled_from([Raw("NaN"), Raw("Infinity"), Raw("-Infinity")]),
        st.builds(deep, st.sampled_from(["list", "dict"]), st.sampled_from([65, 1000, 100_000])),
    )


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every path (keys and indexes) to a node of a JSON-like value, the root included."""
    out = [prefix]
    if isinstance(value, dict):
        for k, v in value.items():
            out.extend(paths(v, (*prefix, k)))
    elif isinstance(value, list):
        for i, v in enumerate(value[:8]):  # long arrays: their first elements stand for the rest
            out.extend(paths(v, (*prefix, i)))
    return out


def _get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


@st.composite
def mutated_json(draw: st.DrawFn, seed: Any, max_edits: int = 3, values: st.SearchStrategy[Any] | None = None) -> Any:
    """``seed`` (a JSON-like value) with 1..``max_edits`` structured edits: a node replaced by a
    hostile value, a key removed, an unknown key added, a node wrapped in a list."""
    value = copy.deepcopy(seed)
    values = values if values is not None else hostile_values()
    for _ in range(draw(st.integers(1, max_edits))):
        path = draw(st.sampled_from(paths(value)))
        action = draw(st.sampled_from(["replace", "replace", "replace", "delete", "add", "wrap"]))
        # a copy: sampled values are shared objects, and later edits must not reach them
        new = copy.deepcopy(draw(values)) if action in ("replace", "add") else None
        if not path:
            value = new if action == "replace" else [value] if action == "wrap" else value
            continue
        parent, key = _get(value, path[:-1]), path[-1]
        if action == "replace":
            parent[key] = new
        elif action == "wrap":
            parent[key] = [parent[key]]
        elif action == "delete":
            del parent[key]
        elif isinstance(parent, dict):
            parent[draw(st.sampled_from(["extra", "", "__proto__", str(key) + "_"]))] = new
        else:
            parent.append(new)
    return value


def _flip(data: bytearray, pos: int, byte: int) -> None:
    if data:
        data[pos % len(data)] = byte


def _word(data: bytearray, pos: int, word: int, width: int) -> None:
    if len(data) >= width:
        pos %= len(data) - width + 1
        data[pos : pos + width] = struct.pack("<Q", word % 2**64)[:width]


@st.composite
def mutated_bytes(draw: st.DrawFn, seed: bytes, hot: int | None = None, max_edits: int = 4) -> bytes:
    """``seed`` with 1..``max_edits`` byte edits, positions mostly within the first ``hot`` bytes
    (the header): a byte set, a u8..u64 overwritten with an interesting value, a cut, an insertion,
    a duplicated span."""
    data = bytearray(seed)
    hot = max(1, min(hot or len(seed), len(seed)))
    for _ in range(draw(st.integers(1, max_edits))):
        where = draw(st.one_of(st.integers(0, hot - 1), st.integers(0, max(0, len(data) - 1))))
        op = draw(st.sampled_from(["byte", "byte", "word", "word", "cut", "insert", "dup"]))
        if op == "byte":
            _flip(data, where, draw(st.one_of(st.integers(0, 255), st.sampled_from([0, 0xFF, 0x7F, 0x80]))))
        elif op == "word":
            _word(data, where, draw(st.sampled_from(_WORDS)), draw(st.sampled_from([1, 2, 4, 8])))
        elif op == "cut":
            del data[where:]
        elif op == "insert":
            data[where:where] = draw(st.binary(min_size=1, max_size=16))
        else:
            span = draw(st.integers(1, 64))
            data[where:where] = data[where : where + span]
    return bytes(data)


def json_file(seed: Any, *, raw_text: Callable[[Any], str] = dumps, max_edits: int = 3) -> st.SearchStrategy[bytes]:
    """The bytes of a JSON file built from ``seed``: structured edits (mostly; some of one field
    to a barely valid extreme), byte edits of the valid text, or text that is not UTF-8."""
    text = raw_text(seed).encode()
    extreme = st.sampled_from(EXTREME_POSITIVES)
    return st.one_of(
        mutated_json(seed, 1, extreme).map(lambda v: raw_text(v).encode()),  # one field, barely valid
        mutated_json(seed, max_edits).map(lambda v: raw_text(v).encode("utf-8", "surrogatepass")),
        mutated_json(seed, max_edits).map(lambda v: raw_text(v).encode("utf-8", "surrogatepass")),
        mutated_bytes(text),
        st.just(text).map(lambda b: b.replace(b'"', b'"\xff', 1)),
    )
