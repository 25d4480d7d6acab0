"""Fuzzing every parser of ccsm and its command line with Hypothesis.

Each target (`Target`) makes cases (`Case`: files, links to seed files, arguments) from valid
tiny seed files (`Seeds`) by byte and structured mutations (`mutate`), and runs the real loading
path on them: it must succeed or raise a `CcsmError`. ``tests/test_fuzz_*.py`` run a few hundred
cases of each in ``make test``; ``make fuzz`` (`runner`) runs thousands in worker processes with
limits on time and memory, and catches native crashes.
"""

from __future__ import annotations

from .case import Case
from .seeds import Seeds
from .target import Target, Violation

__all__ = ["Case", "Seeds", "Target", "Violation", "all_targets", "get_target"]


def all_targets() -> list[Target]:
    """Every fuzz target, by family."""
    from . import command_line, configs, gguf, media, probe, tokenizer_files, weights

    return [
        *gguf.TARGETS,
        *weights.TARGETS,
        *configs.TARGETS,
        *tokenizer_files.TARGETS,
        *media.TARGETS,
        *command_line.TARGETS,
        *probe.probe_targets(),
    ]


def get_target(name: str) -> Target:
    for t in all_targets():
        if t.name == name:
            return t
    raise KeyError(f"no fuzz target {name!r}; known: {', '.join(t.name for t in all_targets())}")
