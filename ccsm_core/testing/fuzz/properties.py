"""The property tests of ``make test``: a fixed, small set of cases per target, run in the test
process (time and memory guarded), each to succeed or raise a `CcsmError`."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ...limits import parse_size, set_max_memory
from . import get_target
from .execute import FUZZ_BUDGET, Outcome, drive, execute, fuzz_environment
from .runner import save_case
from .seeds import Seeds

CASE_TIMEOUT_S = 10.0  # `make fuzz` allows 30 s; a case of `make test` that needs 10 is a hang too


@contextmanager
def fuzz_settings(root: Path) -> Iterator[None]:
    """The fuzz environment (memory budget, private caches and config) for the block."""
    saved = {k: os.environ.get(k) for k in fuzz_environment(root)}
    os.environ.update(fuzz_environment(root))
    set_max_memory(parse_size(FUZZ_BUDGET))
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        set_max_memory(None)


def check_target(name: str, seeds_root: Path, work: Path, examples: int) -> list[Outcome]:
    """Run ``examples`` derandomized cases of target ``name``; returns every outcome, and raises
    `AssertionError` naming each distinct failure (its input kept under ``work/failures``)."""
    target = get_target(name)
    outcomes: list[Outcome] = []
    failures: dict[str, Outcome] = {}

    def on_case(case: object) -> None:
        outcome = execute(target, case, work / "case", in_process_limits=CASE_TIMEOUT_S)  # type: ignore[arg-type]
        outcomes.append(outcome)
        if outcome.failed and outcome.key not in failures:
            failures[outcome.key] = outcome
            save_case(work / "case", work / "failures" / f"{len(failures)}", name, outcome)

    with fuzz_settings(work):
        drive(target, Seeds(seeds_root), examples, on_case, derandomize=True)
    if failures:
        lines = [f"{o.kind}: {o.detail} (at {o.where or 'no ccsm frame'})" for o in failures.values()]
        raise AssertionError(
            f"{name}: {len(failures)} distinct failures in {len(outcomes)} cases "
            f"(inputs under {work / 'failures'}; replay with python -m ccsm_core.testing.fuzz --replay DIR):\n"
            + "\n".join(lines)
            + "\n\n"
            + next((o.trace for o in failures.values() if o.trace), "")
        )
    return outcomes
