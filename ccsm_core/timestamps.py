"""Subtitles for generated speech: cues as SRT, WebVTT or JSON, written atomically.

Times are rounded half up to whole milliseconds from their shortest decimal form (1.0005 s is
``00:00:01,001``), the same way in every format. Cue text is kept on its lines, with blank lines
dropped (a blank line ends a cue) and any ``-->`` turned into ``->`` (it marks a timing line);
WebVTT text also has ``& < >`` escaped.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import os
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from ccsm_core.errors import UsageError

__all__ = ["Cue", "to_json", "to_srt", "to_vtt", "write_text_atomic"]

_ARROW = re.compile(r"-{2,}>")


@dataclass(frozen=True)
class Cue:
    """One subtitle: ``text`` spoken from ``start`` to ``end`` seconds of the output audio."""

    index: int  # 1-based
    start: float  # seconds in the output audio
    end: float
    text: str
    speaker: int | None = None
    voice: str | None = None

    def __post_init__(self) -> None:
        """Check the fields; NumPy numbers become plain ``int`` and ``float``."""
        where = f"cue {self.index!r}"
        if not _is_int(self.index) or self.index < 1:
            raise UsageError(f"{where}: the index must be an integer from 1", "number cues 1, 2, 3, ...")
        object.__setattr__(self, "index", int(self.index))
        for name in ("start", "end"):
            value = getattr(self, name)
            if not _is_real(value) or not math.isfinite(value) or value < 0:
                raise UsageError(f"{where}: {name} must be a finite number of seconds >= 0, got {value!r}")
            object.__setattr__(self, name, float(value))
        if self.start > self.end:
            raise UsageError(f"{where}: it starts at {self.start} s, after its end at {self.end} s")
        if not isinstance(self.text, str) or not _lines(self.text):
            raise UsageError(f"{where}: it has no text", "give each cue the words spoken")
        if self.speaker is not None:
            if not _is_int(self.speaker) or self.speaker < 0:
                raise UsageError(f"{where}: the speaker must be an integer >= 0, got {self.speaker!r}")
            object.__setattr__(self, "speaker", int(self.speaker))
        if self.voice is not None and (not isinstance(self.voice, str) or not self.voice.strip()):
            raise UsageError(f"{where}: the voice must be a non-empty name, got {self.voice!r}")


def _is_int(value: object) -> bool:
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_real(value: object) -> bool:
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def to_srt(cues: Iterable[Cue]) -> str:
    """SubRip text: numbered blocks, ``HH:MM:SS,mmm --> HH:MM:SS,mmm``, a blank line between blocks."""
    blocks = []
    for cue in _checked(cues):
        text = "\n".join(_lines(cue.text))
        blocks.append(f"{cue.index}\n{_clock(cue.start, ',')} --> {_clock(cue.end, ',')}\n{text}\n")
    return "\n".join(blocks)


def to_vtt(cues: Iterable[Cue]) -> str:
    """WebVTT text: the ``WEBVTT`` header, then cues named by index; ``<v NAME>`` shows the voice
    (or ``Speaker N``) when one is set."""
    blocks = ["WEBVTT\n"]
    for cue in _checked(cues):
        text = "\n".join(_escape(line) for line in _lines(cue.text))
        name = cue.voice.strip() if cue.voice is not None else None
        if name is None and cue.speaker is not None:
            name = f"Speaker {cue.speaker}"
        if name is not None:
            text = f"<v {_escape(' '.join(name.split()))}>{text}"
        blocks.append(f"{cue.index}\n{_clock(cue.start, '.')} --> {_clock(cue.end, '.')}\n{text}\n")
    return "\n".join(blocks)


def to_json(cues: Iterable[Cue]) -> list[dict[str, Any]]:
    """``[{"index", "start", "end", "text", "speaker", "voice"}]``, times in seconds rounded to ms."""
    return [
        {
            "index": cue.index,
            "start": _millis(cue.start) / 1000,
            "end": _millis(cue.end) / 1000,
            "text": cue.text,
            "speaker": cue.speaker,
            "voice": cue.voice,
        }
        for cue in _checked(cues)
    ]


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` through a temporary file in the same folder and `os.replace`,
    so readers see the old file or the new one, never a part. `UsageError` naming ``path`` when
    its folder is missing or it cannot be written."""
    path = Path(path)
    folder = path.parent
    if not folder.is_dir():
        raise UsageError(f"cannot write {path}: the folder {folder} does not exist", "create it or choose another path")
    data = text.encode("utf-8")
    tmp = None
    try:
        fd, tmp = _create_temp(folder, path.name)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.chmod(tmp, path.stat().st_mode & 0o7777)  # replacing a file keeps its permissions
            except FileNotFoundError:
                pass
            os.replace(tmp, path)
            tmp = None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise UsageError(f"cannot write {path}: {reason}", "choose a path in a folder you can write to") from None


def _create_temp(folder: Path, name: str) -> tuple[int, str]:
    """A new file ``.NAME.XXXXXXXX.tmp`` in ``folder``, made with the usual permissions (0666 less the umask)."""
    for _ in range(100):
        tmp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
        try:
            return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name in {folder}")


def _checked(cues: Iterable[Cue]) -> list[Cue]:
    """``cues`` as a list, after checking each is a `Cue` and that indexes rise and starts do not fall."""
    out = list(cues)
    for i, cue in enumerate(out):
        if not isinstance(cue, Cue):
            raise UsageError(f"item {i} is a {type(cue).__name__}, not a Cue")
        if i:
            prev = out[i - 1]
            if cue.index <= prev.index:
                raise UsageError(f"cue {cue.index} comes after cue {prev.index}", "give cues in order of their index")
            if cue.start < prev.start:
                raise UsageError(
                    f"cue {cue.index} starts at {cue.start} s, before cue {prev.index} at {prev.start} s",
                    "give cues in order of time",
                )
    return out


def _lines(text: str) -> list[str]:
    """The non-blank lines of ``text``, stripped, with any ``-->`` made ``->``."""
    return [_ARROW.sub("->", line.strip()) for line in text.splitlines() if line.strip()]


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _millis(seconds: float) -> int:
    return int(Decimal(repr(float(seconds))).scaleb(3).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def _clock(seconds: float, sep: str) -> str:
    """``HH:MM:SS<sep>mmm`` (hours take more digits past 99)."""
    ms = _millis(seconds)
    s, ms = divmod(ms, 1000)
    m, s = divmod(s, 60)
    h, m = divmod(m, 60)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"
