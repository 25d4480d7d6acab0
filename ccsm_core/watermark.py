"""Choosing the watermark applied to generated audio (provided by a watermark plugin), and
calling it so that a failing watermarker stops the run loudly instead of leaving audio unmarked.

Every call into the watermarker (its factory, ``read_key``, ``embed``, ``stream``, ``push``,
``flush``) is guarded (`ccsm_core.plugin_code`): whatever it raises, or a result of the wrong
shape, is a `PluginError` naming the plugin whose hint is ``--no-watermark``. Without a method
named, a watermark plugin that is installed but failed, disabled, incompatible or in conflict is
an error too: output is never unmarked unless the user asks for it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from .errors import PluginError, UsageError
from .plugin_code import guarded

NO_MARK_HINT = "pass --no-watermark to write unmarked audio, or another --watermark-method"


class AppliedWatermark:
    """A watermarker with its key and payload, ready to mark generated audio."""

    def __init__(self, name: str, marker: Any, payload: int, plugin: str = "?") -> None:
        self.name, self.marker, self.payload, self.plugin = name, marker, payload, plugin

    def _call(self, what: str) -> guarded:
        return guarded(self.plugin, f"the {what} of watermark {self.name!r}", NO_MARK_HINT)

    def embed(self, wave: np.ndarray, sample_rate: int) -> np.ndarray:
        call = self._call("embed()")
        try:
            with call:
                marked = np.asarray(self.marker.embed(wave, sample_rate, self.payload), np.float32)
        except PluginError as e:
            if isinstance(e.__cause__, ValueError):  # the method's word that it cannot mark this
                raise UsageError(
                    f"watermark {self.name!r} (plugin {self.plugin}) cannot mark this audio: {e.__cause__}",
                    NO_MARK_HINT,
                ) from None
            raise
        if marked.shape != np.shape(wave):
            raise call.fail(f"returned audio of shape {marked.shape} for audio of shape {np.shape(wave)}")
        if not np.isfinite(marked).all():
            raise call.fail("returned audio with NaN or infinite samples")
        return marked

    def stream(self, sample_rate: int) -> MarkStream | None:
        """A `MarkStream` that marks audio block by block, or None when the method cannot
        stream (it has no ``stream(sample_rate, payload)``)."""
        make = getattr(self.marker, "stream", None)
        if make is None:
            return None
        call = self._call("stream()")
        try:
            with call:
                inner = make(sample_rate, self.payload)
        except PluginError as e:
            if isinstance(e.__cause__, ValueError):
                raise UsageError(
                    f"watermark {self.name!r} (plugin {self.plugin}) cannot mark this stream: {e.__cause__}",
                    NO_MARK_HINT,
                ) from None
            raise
        return MarkStream(inner, self._call)


class MarkStream:
    """Marks a stream: ``push(block)`` returns the marked samples that are final (a little
    behind the input: the method's fixed look-ahead), ``flush()`` the rest; together they have
    the input's length. Blocks are float32 ``(n,)`` at the rate the stream was made for."""

    def __init__(self, inner: Any, call: Any = None) -> None:
        self.inner = inner
        self._call = call if call is not None else (lambda what: guarded("?", f"the {what} of a watermark"))

    def push(self, block: np.ndarray) -> np.ndarray:
        call = self._call("stream's push()")
        with call:
            out = np.asarray(self.inner.push(block), np.float32)
        return self._checked(out, call)

    def flush(self) -> np.ndarray:
        call = self._call("stream's flush()")
        with call:
            out = np.asarray(self.inner.flush(), np.float32)
        return self._checked(out, call)

    @staticmethod
    def _checked(out: np.ndarray, call: guarded) -> np.ndarray:
        if out.ndim != 1:
            raise call.fail(f"returned an array of shape {out.shape}, not samples of shape (n,)")
        if not np.isfinite(out).all():
            raise call.fail("returned NaN or infinite samples")
        return out


def pick_watermarker(key_file: str | None = None, method: str | None = None) -> AppliedWatermark | None:
    """The default (or named) registered watermarker, keyed by ``key_file`` or its public key.

    ``None`` when no watermark plugin is installed; a `PluginError` when one is installed but
    unusable (failed, disabled, incompatible, in conflict) and no other method is named."""
    from .plugins import get_plugin_manager

    pm = get_plugin_manager()
    reg = pm.registry("watermarkers")
    if not method:
        broken = pm.unusable("watermarkers")
        if broken:
            raise PluginError(f"cannot watermark the audio: {_unusable(broken[0])}", _unusable_hint(broken[0]))
    if not len(reg):
        if key_file or method:
            raise UsageError("no watermark plugin is installed", "pip install ./plugins/ccsm_watermark")
        return None
    entry = reg.get(method or max(reg, key=lambda e: e.default).name)
    if key_file:
        p = Path(key_file)
        if not p.exists():
            raise UsageError(
                f"watermark key file {p} does not exist", "create one with `ccsm watermark keygen -o FILE`"
            )
        with guarded(entry.plugin, f"the read_key() of watermark {entry.name!r}", NO_MARK_HINT):
            key = entry.read_key(str(p)) if entry.read_key is not None else p.read_bytes()
    else:
        if entry.public_key is None:
            raise UsageError(f"watermarker {entry.name!r} has no public default key", "pass --watermark-key FILE")
        key = entry.public_key
    call = guarded(entry.plugin, f"the factory of watermark {entry.name!r}", NO_MARK_HINT)
    with call:
        marker = entry.factory(key)
    if not callable(getattr(marker, "embed", None)):
        raise call.fail(f"returned {type(marker).__name__}, which has no embed(), instead of a watermarker")
    return AppliedWatermark(entry.name, marker, entry.default_payload, entry.plugin)


def _unusable(rec: Any) -> str:
    """Why the watermark plugin of record ``rec`` cannot mark, on one line."""
    if rec.status == "disabled":
        return f"the watermark plugin {rec.name} is disabled (CCSM_DISABLE_PLUGINS or CCSM_LOAD_PLUGINS)"
    if rec.status == "conflict":
        return f"the watermark plugin {rec.name} is in conflict: {rec.error}"
    return f"the watermark plugin {rec.name} is {rec.status}: {rec.error}"


def _unusable_hint(rec: Any) -> str:
    if rec.status == "disabled":
        return "enable it, or pass --no-watermark to write unmarked audio"
    if rec.status == "conflict":
        return "uninstall the distribution that should not provide it, or pass --no-watermark to write unmarked audio"
    what = rec.dist or rec.name
    return f"reinstall or update {what} (see `ccsm plugins`), or pass --no-watermark to write unmarked audio"


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
