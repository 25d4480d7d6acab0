"""The schema of a GGUF vocabulary (``tokenizer.ggml.*``): every value typed and ranged before a
tokenizer is built from it.

Tokens are a list of strings; scores, when given, one finite number per token; token types one
of llama.cpp's ``llama_token_type`` values (0..6) per token; merges a list of strings; flags
booleans; special-token ids integers (an id outside the vocabulary is ignored, as llama.cpp
ignores it).
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping
from typing import Any

import numpy as np

from ..errors import FormatError

PREFIX = "tokenizer.ggml."
MAX_VOCAB = 1 << 24
MAX_TOKEN_TYPE = 6  # llama_token_type: 0 undefined .. 6 byte
_HINT = "the file's vocabulary is broken; convert the model again"


def _items(value: Any) -> list[Any] | None:
    if isinstance(value, np.ndarray):
        return value.reshape(-1).tolist()
    return value if isinstance(value, list) else None


def tokens(md: Mapping[str, Any]) -> list[str]:
    """``tokenizer.ggml.tokens``: a non-empty list of at most `MAX_VOCAB` strings."""
    items = _items(md.get(PREFIX + "tokens"))
    if not items or not all(isinstance(t, str) for t in items):
        raise FormatError(
            "GGUF metadata has no tokenizer.ggml.tokens string list",
            "the file carries no vocabulary; pass a tokenizer file instead",
        )
    if len(items) > MAX_VOCAB:
        raise FormatError(f"GGUF vocabulary of {len(items)} tokens is larger than {MAX_VOCAB}", _HINT)
    return items


def scores(md: Mapping[str, Any], n: int) -> list[float] | None:
    """``tokenizer.ggml.scores``: one finite number per token (None when absent)."""
    items = _numbers(md, "scores", n)
    if items is None:
        return None
    bad = next((i for i, x in enumerate(items) if isinstance(x, bool) or not math.isfinite(x)), None)
    if bad is not None:
        raise FormatError(f"GGUF tokenizer.ggml.scores[{bad}] = {items[bad]!r} is not a finite number", _HINT)
    return [float(x) for x in items]


def token_types(md: Mapping[str, Any], n: int) -> list[int] | None:
    """``tokenizer.ggml.token_type``: one of 0..6 per token (None when absent)."""
    items = _numbers(md, "token_type", n)
    if items is None:
        return None
    bad = next(
        (i for i, x in enumerate(items) if not isinstance(x, int) or isinstance(x, bool) or not 0 <= x <= 6), None
    )
    if bad is not None:
        raise FormatError(
            f"GGUF tokenizer.ggml.token_type[{bad}] = {items[bad]!r} is not a token type (0..{MAX_TOKEN_TYPE})", _HINT
        )
    return items


def _numbers(md: Mapping[str, Any], key: str, n: int) -> list[Any] | None:
    value = md.get(PREFIX + key)
    if value is None:
        return None
    items = _items(value)
    if items is None or not all(isinstance(x, (int, float)) for x in items):
        raise FormatError(f"GGUF tokenizer.ggml.{key} is not a list of numbers", _HINT)
    if len(items) != n:
        raise FormatError(f"GGUF tokenizer.ggml.{key} has {len(items)} numbers for {n} tokens", _HINT)
    return items


def merges(md: Mapping[str, Any]) -> list[str]:
    """``tokenizer.ggml.merges``: a list of strings (``"a b"``)."""
    items = _items(md.get(PREFIX + "merges"))
    if items is None:
        raise FormatError(
            "GGUF BPE vocabulary has no tokenizer.ggml.merges list", "the file is incomplete; convert the model again"
        )
    bad = next((i for i, m in enumerate(items) if not isinstance(m, str)), None)
    if bad is not None:
        raise FormatError(f"GGUF tokenizer.ggml.merges[{bad}] = {items[bad]!r:.40} is not a string", _HINT)
    return items


def flag(md: Mapping[str, Any], key: str, default: bool) -> bool:
    """A boolean ``tokenizer.ggml.<key>`` (``default`` when absent)."""
    value = md.get(PREFIX + key)
    if value is None:
        return default
    if not isinstance(value, (bool, np.bool_)):
        raise FormatError(f"GGUF tokenizer.ggml.{key} = {value!r:.40} is not a boolean", _HINT)
    return bool(value)


def special_id(md: Mapping[str, Any], key: str, default: int | None, n: int) -> int | None:
    """A special-token id ``tokenizer.ggml.<key>``, falling back to ``default``; an id outside
    the vocabulary is ignored (as llama.cpp does), a value that is no integer is an error."""
    if default is not None and not 0 <= default < n:
        default = None
    value: Any = md.get(PREFIX + key)
    if value is None:
        return default
    try:
        if isinstance(value, (bool, np.bool_)):
            raise TypeError
        index = operator.index(value)
    except TypeError:
        raise FormatError(f"GGUF tokenizer.ggml.{key} = {value!r:.40} is not a token id", _HINT) from None
    return index if 0 <= index < n else default
