"""Dialogue scripts: one turn per line, ``[voice-or-speaker-id] text``.

::

    # a comment
    [ann] Hi! How are you?
    [1] Fine, thanks.
        A line without a tag goes on with the turn before it.

A tag that is a whole number (0 to 1,000,000) is a speaker id; any other tag names a voice
(letters, digits, ``- _ .``, 1-64 characters, not starting with ``.``). Blank lines and lines
starting with ``#`` are skipped. Errors name the source and the line.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from ccsm_core.errors import FormatError, UsageError

__all__ = ["MAX_SCRIPT_BYTES", "MAX_SPEAKER_ID", "ScriptTurn", "parse_script", "read_script"]

MAX_SCRIPT_BYTES = 1 << 20
MAX_SPEAKER_ID = 1_000_000

_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_HINT_TAG = "write [name] or [0] at the start of each turn, e.g. [ann] Hello."


@dataclass(frozen=True)
class ScriptTurn:
    """One turn of a script."""

    line: int  # 1-based line number of the tag
    tag: str  # as written, stripped
    speaker: int | None  # set when the tag is a non-negative integer
    voice: str | None  # set when the tag is a name
    text: str


def parse_script(text: str, source: str = "script") -> list[ScriptTurn]:
    """The turns of the script ``text``; `FormatError` (naming ``source`` and the line) when it is mis-shaped."""
    if text.startswith("\ufeff"):
        text = text[1:]
    turns: list[tuple[int, str, int | None, str | None, list[str]]] = []  # parts of text grow in place
    for number, line in enumerate(text.replace("\r\n", "\n").replace("\r", "\n").split("\n"), start=1):
        where = f"{source} line {number}"
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        if not stripped.startswith("["):
            if not turns:
                raise FormatError(f"{where}: text before the first [tag]", _HINT_TAG)
            turns[-1][4].append(stripped)
            continue
        close = stripped.find("]")
        if close < 0:
            raise FormatError(f"{where}: the tag {stripped[:20]!r} has no closing ]", _HINT_TAG)
        tag = stripped[1:close].strip()
        speaker, voice = _read_tag(tag, where)
        rest = stripped[close + 1 :].strip()
        turns.append((number, tag, speaker, voice, [rest] if rest else []))
    if not turns:
        raise FormatError(f"{source}: the script has no turns", _HINT_TAG)
    out = []
    for number, tag, speaker, voice, parts in turns:
        if not parts:
            raise FormatError(f"{source} line {number}: the turn [{tag}] has no text", "write the words after the tag")
        out.append(ScriptTurn(line=number, tag=tag, speaker=speaker, voice=voice, text=" ".join(parts)))
    return out


def read_script(path: str) -> list[ScriptTurn]:
    """The turns of the script file ``path`` (``-`` reads standard input): UTF-8, a BOM allowed,
    at most 1 MiB. `UsageError` when it cannot be read, `FormatError` when it is mis-shaped."""
    source = "stdin" if path == "-" else str(path)
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_SCRIPT_BYTES + 1)
        else:
            with open(path, "rb") as f:
                data = f.read(MAX_SCRIPT_BYTES + 1)
    except FileNotFoundError:
        raise UsageError(f"{source}: no such file", "check the script path") from None
    except IsADirectoryError:
        raise UsageError(f"{source} is a folder, not a script file", "give the path of a script file") from None
    except OSError as exc:
        raise UsageError(f"cannot read {source}: {exc.strerror or exc}", "check the script path") from None
    if len(data) > MAX_SCRIPT_BYTES:
        raise FormatError(
            f"{source} is larger than {MAX_SCRIPT_BYTES // (1 << 20)} MiB", "split the dialogue into smaller scripts"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = bytes(exc.object[: exc.start]).count(b"\n") + 1  # exc.object is the data after any BOM
        offset = exc.start + len(data) - len(exc.object)
        raise FormatError(f"{source} line {line}: not UTF-8 text (byte {offset})", "save the script as UTF-8") from None
    if not text.strip():
        raise FormatError(f"{source}: the script is empty", _HINT_TAG)
    return parse_script(text, source)


def _read_tag(tag: str, where: str) -> tuple[int | None, str | None]:
    """(speaker, voice) that ``tag`` stands for."""
    if not tag:
        raise FormatError(f"{where}: empty tag []", _HINT_TAG)
    if tag.isascii() and tag.isdigit():
        speaker = int(tag)
        if speaker > MAX_SPEAKER_ID:
            raise FormatError(
                f"{where}: speaker id {tag} is too large", f"use a speaker id from 0 to {MAX_SPEAKER_ID:,}"
            )
        return speaker, None
    if tag.startswith("-") and tag[1:].isascii() and tag[1:].isdigit():
        raise FormatError(f"{where}: speaker id {tag} is negative", f"use a speaker id from 0 to {MAX_SPEAKER_ID:,}")
    if not _NAME.fullmatch(tag) or tag.startswith("."):
        raise FormatError(
            f"{where}: the tag [{tag}] is not a speaker id or voice name",
            "a voice name is 1-64 letters, digits, '-', '_' or '.', not starting with '.'; a speaker id is 0, 1, ...",
        )
    return None, tag
