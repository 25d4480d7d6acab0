"""Fitting conversation context into the backbone's token budget.

A turn costs its text rows (``[bos] + tokens + [eos]``) plus, with audio, one row per Mimi
frame and one end-of-audio row. When the turns do not fit, whole turns are dropped (the newest
turn is always kept) by one of these strategies:

- ``recency``: drop the oldest first.
- ``importance``: drop the least important first, where a turn's score is
  ``2.0 if it is by the speaker of the new utterance`` (it carries that voice)
  ``+ 1.0 if it has audio`` (it shows how the voices sound)
  ``+ 1.0 * (its position / number of turns)`` (newer turns matter more),
  ties broken by dropping the older turn.
- ``hybrid``: the newest two turns are kept like the newest one; the rest go by importance.

The first ``keep`` turns (a voice's) are never dropped; with ``keep_newest`` off (earlier
sentences of a long text) neither is the newest turn kept.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import GenerationError, UsageError

STRATEGIES = ("recency", "importance", "hybrid")


@dataclass
class Fitted:
    """The turns kept (in their original order) and the indices of those dropped."""

    kept: list
    dropped: list[int]


def audio_seconds_fitting(rows: int, frame_rate: float = 12.5) -> float:
    """The longest audio whose frames and end row fit ``rows`` context rows (checked before a
    file is read or resampled; `check_audio_fits` checks the samples before encoding)."""
    return max(rows - 1, 0) / frame_rate


def check_audio_fits(samples: int, samples_per_frame: int, rows: int, frame_rate: float = 12.5) -> int:
    """The Mimi frames ``samples`` of audio make, checked before encoding against the ``rows``
    of the context (its frames and end row must fit it even alone); `GenerationError` if not."""
    frames = -(-samples // samples_per_frame)
    if frames + 1 > rows:
        raise GenerationError(
            f"context audio of {frames / frame_rate:.1f} s needs {frames + 1} rows; the context holds {rows}",
            "use a shorter recording (a few seconds), or split it into turns",
        )
    return frames


def importance(index: int, n: int, turn, target_speaker: int) -> float:
    """The documented score of turn ``index`` of ``n`` (higher is kept longer)."""
    has_audio = getattr(turn, "audio", None) is not None or getattr(turn, "codes", None) is not None
    return 2.0 * (turn.speaker == target_speaker) + 1.0 * has_audio + index / max(n, 1)


def fit_context(
    turns: Sequence,
    costs: Sequence[int],
    budget: int,
    *,
    target_speaker: int,
    strategy: str = "recency",
    keep: int = 0,
    keep_newest: bool = True,
) -> Fitted:
    """Drop whole turns (``costs[i]`` rows each) until they fit ``budget``; the first ``keep``
    always stay, and the newest unless ``keep_newest`` is off."""
    if strategy not in STRATEGIES:
        raise UsageError(f"unknown context strategy {strategy!r}", f"one of {', '.join(STRATEGIES)}")
    n = len(turns)
    total = sum(costs)
    if total <= budget:
        return Fitted(list(turns), [])
    newest = ({n - 1} if strategy != "hybrid" else {n - 1, n - 2}) if keep_newest else set()
    protect = newest | set(range(min(keep, n)))
    if sum(costs[i] for i in range(min(keep, n))) > budget:
        raise GenerationError(
            f"the voice's turns need {sum(costs[:keep])} rows; only {budget} fit",
            "use a shorter voice, or lower --max-audio-ms",
        )
    candidates = [i for i in range(n) if i not in protect]
    if strategy == "recency":
        order = candidates
    else:
        order = sorted(candidates, key=lambda i: (importance(i, n, turns[i], target_speaker), i))
    dropped: list[int] = []
    for i in order:
        if total <= budget:
            break
        total -= costs[i]
        dropped.append(i)
    if total > budget:
        # hybrid may still fit by giving up the second-newest turn
        if strategy == "hybrid" and n - 2 >= keep and total - costs[n - 2] <= budget:
            total -= costs[n - 2]
            dropped.append(n - 2)
        else:
            raise GenerationError(
                f"the newest turn alone needs {costs[-1]} rows; only {budget} fit",
                "shorten the text or its audio, or lower --max-audio-ms",
            )
    return Fitted([t for i, t in enumerate(turns) if i not in dropped], sorted(dropped))
