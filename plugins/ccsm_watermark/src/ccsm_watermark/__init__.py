"""Keyed, robust audio watermarks for ccsm (classic signal processing, no model download).

Public API (cheap to import; numpy is loaded on first use)::

    from ccsm_watermark import create, DEFAULT_METHOD, PUBLIC_DEFAULT_KEY
    wm = create(DEFAULT_METHOD, key)           # key: bytes
    marked = wm.embed(audio, 24000, 0xC0FFEE42)
    result = wm.detect(marked, 24000)          # WatermarkResult(present, score, payload, p_value)

``PUBLIC_DEFAULT_KEY`` is published here, so anyone can embed or remove a mark made with it:
such a mark says "made by ccsm" to a cooperative reader and proves nothing.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

#: Key used when the user gives none. It is public: a mark made with it proves nothing.
PUBLIC_DEFAULT_KEY: bytes = b"ccsm public watermark key v1 - proves nothing"
#: Method used when none is named.
DEFAULT_METHOD = "ss-stft"
#: Registered names -> (module, class).
METHODS = {"ss-stft": "SpreadSpectrum", "patchwork": "Patchwork"}
PAYLOAD_BITS = 32


def create(method: str, key: bytes, **params: Any) -> Any:
    """A watermarker of ``method`` for ``key`` (``params``: strength_db, threshold)."""
    from . import methods

    if method not in METHODS:
        raise ValueError(f"unknown watermark method {method!r} (known: {', '.join(METHODS)})")
    return getattr(methods, METHODS[method])(key, **params)
