"""Choosing the watermark applied to generated audio (provided by a watermark plugin)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError


class AppliedWatermark:
    """A watermarker with its key and payload, ready to mark generated audio."""

    def __init__(self, name: str, marker: Any, payload: int) -> None:
        self.name, self.marker, self.payload = name, marker, payload

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        try:
            return np.asarray(self.marker.embed(wave, sample_rate, self.payload), np.float32)
        except ValueError as e:
            raise UsageError(
                f"watermark {self.name!r} cannot mark this audio: {e}",
                "pass --no-watermark, or another --watermark-method",
            ) from None


def pick_watermarker(key_file: str | None = None, method: str | None = None) -> AppliedWatermark | None:
    """The default (or named) registered watermarker, keyed by ``key_file`` or its public key.

    ``None`` when no watermark plugin is installed."""
    from .plugins import registry

    reg = registry("watermarkers")
    if not len(reg):
        if key_file or method:
            raise UsageError("no watermark plugin is installed", "pip install ./plugins/ccsm_watermark")
        return None
    entry = reg.get(method) if method else max(reg, key=lambda e: e.default)
    if key_file:
        p = Path(key_file)
        if not p.exists():
            raise UsageError(
                f"watermark key file {p} does not exist", "create one with `ccsm watermark keygen -o FILE`"
            )
        key = entry.read_key(str(p)) if entry.read_key is not None else p.read_bytes()
    else:
        if entry.public_key is None:
            raise UsageError(f"watermarker {entry.name!r} has no public default key", "pass --watermark-key FILE")
        key = entry.public_key
    payload = entry.default_payload
    return AppliedWatermark(entry.name, entry.factory(key), payload)
