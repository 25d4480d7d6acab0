"""Audio response bodies: 24 kHz mono in wav, pcm, mp3, opus or flac, whole or streamed.

``pcm`` is OpenAI's: 16-bit signed little-endian samples, no header. ``wav`` is the same samples
behind a RIFF header (a streamed one gives its sizes as 0xFFFFFFFF: unknown, read to the end).
Samples beyond +-1 are clipped. mp3 (constant bit rate) and opus (Ogg pages of at most
`OPUS_PAGE_MS`) stream from libsndfile's encoders as they emit bytes; flac is only sent whole
(a streamed FLAC could not give its length, which many readers need).
"""

from __future__ import annotations

import io
import struct
from typing import Any

import numpy as np

RATE = 24_000
CONTENT_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "flac": "audio/flac",
}
STREAMABLE = ("pcm", "wav", "mp3", "opus")
OPUS_PAGE_MS = 100.0
_SOUNDFILE = {  # format -> (libsndfile format, subtype, extra SoundFile options)
    "mp3": ("MP3", "MPEG_LAYER_III", {"bitrate_mode": "CONSTANT", "compression_level": 0.5}),
    "opus": ("OGG", "OPUS", {}),
    "flac": ("FLAC", "PCM_16", {}),
}
_SFC_SET_OGG_PAGE_LATENCY_MS = 0x1302
_UNKNOWN = 0xFFFFFFFF


def pcm16(samples: np.ndarray) -> bytes:
    """Float samples as 16-bit little-endian PCM (clipped to +-1)."""
    x = np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)
    return np.round(x * 32767.0).astype("<i2").tobytes()


def wav_header(samples: int | None) -> bytes:
    """A 44-byte header of 16-bit mono PCM at `RATE` (``None``: length unknown, for streaming)."""
    data = _UNKNOWN if samples is None else 2 * samples
    riff = _UNKNOWN if samples is None else 36 + data
    fmt = struct.pack("<IHHIIHH", 16, 1, 1, RATE, RATE * 2, 2, 16)
    return b"RIFF" + struct.pack("<I", riff) + b"WAVEfmt " + fmt + b"data" + struct.pack("<I", data)


def encode_whole(samples: np.ndarray, fmt: str) -> bytes:
    """The whole audio as one file of ``fmt``."""
    if fmt == "pcm":
        return pcm16(samples)
    if fmt == "wav":
        return wav_header(int(np.asarray(samples).size)) + pcm16(samples)
    import soundfile as sf

    kind, subtype, options = _SOUNDFILE[fmt]
    buf = io.BytesIO()
    x = np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0)
    with sf.SoundFile(buf, "w", samplerate=RATE, channels=1, format=kind, subtype=subtype, **options) as f:
        f.write(x)
    return buf.getvalue()


class _ForwardSink:
    """A write-only file for libsndfile that hands bytes on as they come: writes behind what was
    handed on already (header fix-ups at close) are dropped."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.base = 0  # file offset of buf[0]
        self.pos = 0

    def write(self, data: Any) -> int:
        b = bytes(data)
        off = self.pos - self.base
        if off >= 0:
            end = off + len(b)
            if end > len(self.buf):
                self.buf.extend(b"\0" * (end - len(self.buf)))
            self.buf[off:end] = b
        self.pos += len(b)
        return len(b)

    def seek(self, offset: int, whence: int = 0) -> int:
        if whence == 0:
            self.pos = offset
        elif whence == 1:
            self.pos += offset
        else:
            self.pos = self.base + len(self.buf) + offset
        return self.pos

    def tell(self) -> int:
        return self.pos

    def read(self, size: int = -1) -> bytes:
        return b""

    def take(self) -> bytes:
        out = bytes(self.buf)
        self.base += len(out)
        self.buf = bytearray()
        return out


class StreamEncoder:
    """Encodes audio chunk by chunk: `push` returns the bytes ready so far, `close` the rest."""

    def __init__(self, fmt: str) -> None:
        if fmt not in STREAMABLE:
            raise ValueError(f"{fmt} cannot be streamed")
        self.fmt = fmt
        self._file: Any = None
        self._sink: _ForwardSink | None = None
        self._head = wav_header(None) if fmt == "wav" else b""
        if fmt in _SOUNDFILE:
            import soundfile as sf

            kind, subtype, options = _SOUNDFILE[fmt]
            self._sink = _ForwardSink()
            self._file = sf.SoundFile(
                self._sink, "w", samplerate=RATE, channels=1, format=kind, subtype=subtype, **options
            )
            if fmt == "opus":
                _set_page_latency(sf, self._file, OPUS_PAGE_MS)

    def push(self, samples: np.ndarray) -> bytes:
        head, self._head = self._head, b""
        if self._file is None:
            return head + pcm16(samples)
        assert self._sink is not None
        self._file.write(np.clip(np.asarray(samples, np.float32).reshape(-1), -1.0, 1.0))
        return head + self._sink.take()

    def close(self) -> bytes:
        head, self._head = self._head, b""
        if self._file is None:
            return head
        assert self._sink is not None
        self._file.close()
        self._file = None
        return head + self._sink.take()


def _set_page_latency(sf: Any, f: Any, ms: float) -> None:
    """Flush Ogg pages every ``ms`` (libsndfile >= 1.2 waits about a second otherwise)."""
    try:
        value = sf._ffi.new("double*", ms)
        sf._snd.sf_command(f._file, _SFC_SET_OGG_PAGE_LATENCY_MS, value, sf._ffi.sizeof("double"))
    except (AttributeError, TypeError):  # another soundfile: keep libsndfile's default latency
        pass
