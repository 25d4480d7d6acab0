"""Choosing the watermark applied to generated audio (provided by a watermark plugin)."""

from __future__ import annotations

from collections.abc import Iterator
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

    def stream(self, sample_rate: int) -> MarkStream | None:
        """A `MarkStream` that marks audio block by block, or None when the method cannot
        stream (it has no ``stream(sample_rate, payload)``)."""
        make = getattr(self.marker, "stream", None)
        if make is None:
            return None
        try:
            return MarkStream(make(sample_rate, self.payload))
        except ValueError as e:
            raise UsageError(
                f"watermark {self.name!r} cannot mark this stream: {e}",
                "pass --no-watermark, or another --watermark-method",
            ) from None


class MarkStream:
    """Marks a stream: ``push(block)`` returns the marked samples that are final (a little
    behind the input: the method's fixed look-ahead), ``flush()`` the rest; together they have
    the input's length. Blocks are float32 ``(n,)`` at the rate the stream was made for."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def push(self, block: np.ndarray) -> np.ndarray:
        return np.asarray(self.inner.push(block), np.float32)

    def flush(self) -> np.ndarray:
        return np.asarray(self.inner.flush(), np.float32)


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


def mark_stream(events: Iterator[Any], marker: AppliedWatermark, sample_rate: int) -> Iterator[Any]:
    """The events of a streamed `ccsm_core.pipeline.speak` run with every `Audio` block marked
    as it comes (the method's small look-ahead holds a few milliseconds back, flushed before
    `Finished`); `Finished` then holds the marked whole. Unchanged when the method cannot stream."""
    from dataclasses import replace

    # the pipeline's event types are known by name: this layer does not import the pipeline
    stream = marker.stream(sample_rate)
    if stream is None:
        yield from events
        return
    parts: list[np.ndarray] = []
    audio_event: Any = None
    for ev in events:
        kind = type(ev).__name__
        if kind == "Audio":
            audio_event = type(ev)
            out = stream.push(ev.samples)
            parts.append(out)
            if out.size:
                yield audio_event(out)
        elif kind == "Finished":
            tail = stream.flush()
            parts.append(tail)
            if tail.size and audio_event is not None:
                yield audio_event(tail)
            whole = None if ev.audio is None else np.concatenate([np.zeros(0, np.float32), *parts])
            yield replace(ev, audio=whole, watermarked=whole is not None and whole.size > 0)
        else:
            yield ev
