"""Subtitles for generated speech: cues as SRT, WebVTT or JSON, written atomically.

Times are rounded half up to whole milliseconds from their shortest decimal form (1.0005 s is
``00:00:01,001``), the same way in every format. Cue text is kept on its lines, with blank lines
dropped (a blank line ends a cue) and any ``-->`` turned into ``->`` (it marks a timing line);
WebVTT text also has ``& < >`` escaped.
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from ccsm_core.errors import UsageError
from ccsm_core.files import write_atomic

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
                raise UsageError(
                    f"{where}: {name} must be a finite number of seconds >= 0, got {value!r}",
                    "give times in seconds, 0 or more",
                )
            object.__setattr__(self, name, float(value))
        if self.start > self.end:
            raise UsageError(
                f"{where}: it starts at {self.start} s, after its end at {self.end} s",
                "give each cue an end after its start",
            )
        if not isinstance(self.text, str) or not _lines(self.text):
            raise UsageError(f"{where}: it has no text", "give each cue the words spoken")
        if self.speaker is not None:
            if not _is_int(self.speaker) or self.speaker < 0:
                raise UsageError(
                    f"{where}: the speaker must be an integer >= 0, got {self.speaker!r}",
                    "give a speaker id of 0 or more",
                )
            object.__setattr__(self, "speaker", int(self.speaker))
        if self.voice is not None and (not isinstance(self.voice, str) or not self.voice.strip()):
            raise UsageError(
                f"{where}: the voice must be a non-empty name, got {self.voice!r}",
                "give the voice's name, or none",
            )


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
    """Write ``text`` (UTF-8) to ``path`` atomically (`ccsm_core.files.write_atomic`): readers see
    the old file or the new one, never a part; `UsageError` naming ``path`` when it cannot be
    written."""
    write_atomic(path, text.encode("utf-8"))


def _checked(cues: Iterable[Cue]) -> list[Cue]:
    """``cues`` as a list, after checking each is a `Cue` and that indexes rise and starts do not fall."""
    out = list(cues)
    for i, cue in enumerate(out):
        if not isinstance(cue, Cue):
            raise UsageError(f"item {i} is a {type(cue).__name__}, not a Cue", "pass a list of Cue")
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
