"""Token ids from a caller (a prompt, a codes file, a decode request) checked against a vocabulary."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .errors import UsageError

HINT = "the ids come from another model"


def token_ids(ids: Iterable[int] | np.ndarray, vocab_size: int) -> np.ndarray:
    """``ids`` as a flat int64 array, each in ``0..vocab_size - 1``; a `UsageError` names the
    first kind of failure (not integers, or an id outside the vocabulary)."""
    try:
        arr = np.asarray(ids if isinstance(ids, np.ndarray) else list(ids), np.int64).reshape(-1)
    except (OverflowError, TypeError, ValueError):
        raise UsageError(f"token ids must be integers in 0..{vocab_size - 1}", HINT) from None
    if arr.size and not (arr.min() >= 0 and arr.max() < vocab_size):
        bad = int(arr.max() if arr.max() >= vocab_size else arr.min())
        raise UsageError(f"token id {bad} is outside the vocabulary (0..{vocab_size - 1})", HINT)
    return arr
