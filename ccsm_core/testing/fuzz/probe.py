"""A target that misbehaves on purpose, to check that the runner tells each failure apart: its
cases are one word, ``ok``, ``error``, ``raise``, ``abort`` (a native crash), ``hang`` or
``grow`` (memory without end). Listed only with ``CCSM_FUZZ_PROBE=1`` in the environment."""

from __future__ import annotations

import os
import time
from pathlib import Path

from hypothesis import strategies as st

from ...errors import FormatError
from .case import Case
from .target import Target

WORDS = ("ok", "error", "raise", "abort", "hang", "grow")


def _run(folder: Path) -> None:
    word = (folder / "word.txt").read_text()
    if word == "error":
        raise FormatError("word.txt says error", "it was asked to")
    if word == "raise":
        raise ValueError("word.txt says raise")
    if word == "abort":
        os.abort()
    if word == "hang":
        time.sleep(3600)
    if word == "grow":
        chunks = []
        while True:
            chunks.append(bytearray(64 << 20))


def _cases(words: str) -> st.SearchStrategy[Case]:
    return st.sampled_from(words.split(",")).map(lambda w: Case({"word.txt": w.encode()}))


def probe_targets() -> list[Target]:
    """The probe, when ``CCSM_FUZZ_PROBE`` is set (its value: the words to use, default all)."""
    words = os.environ.get("CCSM_FUZZ_PROBE", "")
    if not words:
        return []
    words = ",".join(WORDS) if words == "1" else words
    return [Target("probe", "none", "misbehaves on purpose (runner tests)", lambda seeds: _cases(words), _run)]
