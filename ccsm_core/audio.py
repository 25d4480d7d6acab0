"""Reading, resampling and writing audio (soundfile + soxr), including progressive writing."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import FormatError, UsageError
from .limits import check_allocation, regular_file

SAMPLE_RATE = 24_000
MIN_RATE, MAX_RATE = 8_000, 384_000  # sample rates an input file may have
MAX_SECONDS = 3600.0  # the longest input file read
MAX_CHANNELS = 64
BLOCK_FRAMES = 1 << 18  # frames read and resampled at a time (5.5 s at 48 kHz)
FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}


def resample(wave: np.ndarray, src_rate: int, dst_rate: int) -> np.ndarray:
    """High-quality resampling (soxr) of a 1-D or ``[n, channels]`` float32 signal."""
    if src_rate == dst_rate:
        return np.asarray(wave, np.float32)
    import soxr

    return soxr.resample(np.asarray(wave, np.float32), src_rate, dst_rate, quality="VHQ").astype(np.float32)


def check_rate(rate: object, where: str) -> int:
    """``rate`` if it is a whole sample rate in ``MIN_RATE..MAX_RATE`` Hz, else `FormatError`."""
    if isinstance(rate, bool) or not isinstance(rate, int) or not MIN_RATE <= rate <= MAX_RATE:
        raise FormatError(
            f"{where}: sample rate {rate} Hz is not in {MIN_RATE}..{MAX_RATE}", "re-export it at 24, 44.1 or 48 kHz"
        )
    return rate


def read_audio(path: str | Path, rate: int = SAMPLE_RATE, *, max_seconds: float = MAX_SECONDS) -> np.ndarray:
    """A file as mono float32 at ``rate`` Hz (channels averaged, resampled with soxr).

    The sample rate, channel count and duration (at most ``max_seconds``) are checked, and the
    result's size against the memory budget, before a sample is read; the file is then read,
    mixed and resampled block by block."""
    import soundfile as sf

    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise UsageError(f"audio file {p} does not exist", "check the path")
    regular_file(p, "audio file")
    try:
        with _quiet_native_stderr(), sf.SoundFile(str(p)) as f:
            sr, channels, frames = check_rate(f.samplerate, str(p)), f.channels, f.frames
            if not 1 <= channels <= MAX_CHANNELS:
                raise FormatError(f"{p}: {channels} channels", f"give audio of 1..{MAX_CHANNELS} channels")
            limit = int(max_seconds * sr)
            if frames > limit:
                raise UsageError(
                    f"{p}: {frames / sr:.1f} s of audio is more than the {max_seconds:g} s it may be",
                    "trim the recording (a context turn needs a few seconds)",
                )
            check_allocation(
                frames * 4 * rate / sr + BLOCK_FRAMES * (channels + 8) * 8, f"reading {p}", "trim the recording"
            )
            wave = _read_resampled(f, p, limit, rate)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as e:
        raise FormatError(f"{p}: cannot read audio ({e})", "use WAV, FLAC or OGG") from None
    if wave.size == 0:
        raise FormatError(f"{p}: the audio is empty", "give a recording of the context turn")
    return wave


@contextlib.contextmanager
def _quiet_native_stderr() -> Iterator[None]:
    """Keep what native decoders print straight to file descriptor 2 (libsndfile's MP3 decoder
    notes every damaged frame) off the terminal while a file is read: our own error says it."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except OSError:
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def _read_resampled(f: Any, p: Path, limit: int, rate: int) -> np.ndarray:
    """Every sample of the open SoundFile ``f`` (at most ``limit`` frames, whatever its header
    said), mixed to mono and resampled to ``rate`` block by block: only the result and one
    block are held. The streamed resampler gives exactly what `resample` gives at once."""
    import soxr

    stream = None if f.samplerate == rate else soxr.ResampleStream(f.samplerate, rate, 1, "float32", "VHQ")
    out, total = [], 0
    for block in f.blocks(blocksize=BLOCK_FRAMES, dtype="float32", always_2d=True):
        if not np.isfinite(block).all():
            raise FormatError(f"{p}: the audio holds NaN or infinite samples", "re-export the recording")
        total += len(block)
        if total > limit:
            raise UsageError(f"{p}: the audio is longer than its header said", "re-export the recording")
        mono = block.mean(axis=1, dtype=np.float32)
        out.append(mono if stream is None else stream.resample_chunk(mono))
    if stream is not None and total:
        out.append(stream.resample_chunk(np.zeros(0, np.float32), last=True))
    return np.concatenate(out).astype(np.float32, copy=False) if out else np.zeros(0, np.float32)


def audio_format(path: str) -> str:
    """The soundfile format of ``path`` by its extension; `UsageError` for one we cannot write."""
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise UsageError(
            f"unknown audio extension {ext or '(none)'!r} for {path}",
            "use .wav, .flac or .ogg, or '-' for raw float32 on stdout",
        )
    return FORMATS[ext]


def _subtype(fmt: str, pcm16: bool) -> str:
    if fmt == "WAV":
        return "PCM_16" if pcm16 else "FLOAT"
    return "PCM_16" if fmt == "FLAC" else "VORBIS"


class AudioWriter:
    """Writes audio progressively to a file (by extension) or to stdout (``-``, raw float32).

    Formats that cannot hold values beyond +-1 (16-bit PCM, FLAC, OGG) are never clipped
    silently: a chunk that would clip is scaled down, from then on, and a note is printed.
    """

    def __init__(
        self,
        path: str,
        rate: int = SAMPLE_RATE,
        *,
        pcm16: bool = False,
        out_rate: int | None = None,
        stdout: BinaryIO | None = None,
    ) -> None:
        self.path, self.in_rate = path, rate
        self.rate = out_rate or rate
        self.gain = 1.0
        self.frames_written = 0
        self._resampler = None
        if self.rate != rate:
            import soxr

            self._resampler = soxr.ResampleStream(rate, self.rate, 1, dtype="float32", quality="VHQ")
        if path == "-":
            self._raw = stdout or sys.stdout.buffer
            self._file = None
            self._limited = False
        else:
            import soundfile as sf

            fmt = audio_format(path)
            sub = _subtype(fmt, pcm16)
            self._limited = sub != "FLOAT"
            try:
                self._file = sf.SoundFile(path, "w", samplerate=self.rate, channels=1, format=fmt, subtype=sub)
            except (sf.LibsndfileError, RuntimeError, OSError) as e:
                raise UsageError(f"cannot write {path}: {e}", "check the folder exists and is writable") from None

    def write(self, chunk: np.ndarray, last: bool = False) -> None:
        chunk = np.asarray(chunk, np.float32).reshape(-1)
        if self._resampler is not None:
            chunk = self._resampler.resample_chunk(chunk, last=last)
            if last:
                self._resampler = None
        elif self.rate != self.in_rate:
            raise UsageError("audio written after the last chunk", "write the last chunk with last=True once")
        if self._limited and chunk.size:
            peak = float(np.max(np.abs(chunk))) * self.gain
            if peak > 1.0:
                self.gain /= peak / 0.999
                print(f"note: audio peaks at {peak:.2f}; scaled by {self.gain:.3f} to avoid clipping", file=sys.stderr)
            chunk = chunk * self.gain
        if self._file is not None:
            self._file.write(chunk)
        else:
            self._raw.write(chunk.astype("<f4").tobytes())
            self._raw.flush()
        self.frames_written += chunk.size

    def close(self) -> None:
        if self._resampler is not None:
            self.write(np.zeros(0, np.float32), last=True)
            self._resampler = None
        if self._file is not None:
            self._file.close()
            self._file = None

    def __enter__(self) -> AudioWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def write_audio(
    path: str, wave: np.ndarray, rate: int = SAMPLE_RATE, *, pcm16: bool = False, out_rate: int | None = None
) -> None:
    """Write a whole signal (see `AudioWriter`)."""
    with AudioWriter(path, rate, pcm16=pcm16, out_rate=out_rate) as w:
        w.write(wave, last=True)
