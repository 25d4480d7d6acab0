"""What a fuzz target is: how its cases are made from the seeds, and how one is run."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from ...errors import CcsmError
from .case import Case
from .seeds import Seeds

OWNERS = ("text", "files", "cli", "plugins")


class Violation(AssertionError):
    """A case broke a promise other than "no traceback": ``kind`` is ``output`` (a written file
    neither the complete new one nor the untouched old one) or ``message`` (an error not printed
    as one ``error: ... (hint: ...)`` line with exit 2)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class Target:
    """One parser (or the CLI) under fuzzing.

    ``cases(seeds)`` gives a Hypothesis strategy of `Case`; ``run(folder)`` runs the real loading
    path on a case materialized in ``folder`` and returns normally or raises a `CcsmError`
    (anything else is a failure); ``owner`` says whose code a failure points to."""

    name: str
    owner: str
    what: str
    cases: Callable[[Seeds], st.SearchStrategy[Case]]
    run: Callable[[Path], None]


def all_of(*calls: Callable[[], Any]) -> None:
    """Run every call; anything but a `CcsmError` propagates at once, else the first
    `CcsmError` is raised after all ran (each entry point of a file is tried)."""
    first: CcsmError | None = None
    for call in calls:
        try:
            call()
        except CcsmError as e:
            first = first or e
    if first is not None:
        raise first
