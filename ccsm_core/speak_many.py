"""Many independent utterances at once: `speak` runs interleaved over one shared batch.

Each job (its lines) is spoken exactly as `ccsm_core.pipeline.speak` speaks it alone; up to
``slots`` jobs run at a time, each on its own lane (`Speech.lane`: own caches, shared weights),
and their frames are computed together (`ccsm_core.batching.FrameBatch`), their audio
decoded together too (`ccsm_core.mimi_lanes.MimiLanes`: a job's Audio event may come a turn
later than alone, with the same samples). Events come back as
``(job index, event)``, one at a time from each running job in turn, every job's in order. A job
that fails yields ``(index, Failed)`` and the others go on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from .batching import FrameBatch
from .errors import CcsmError, UsageError
from .generator import GenerationSettings, Segment
from .mimi_lanes import MimiLanes
from .pipeline import Event, Line, SpeakOptions, speak


@dataclass(frozen=True)
class Failed:
    """A job's error (its other events stop here)."""

    error: CcsmError


def speak_many(
    speech: Any,
    jobs: Sequence[Sequence[Line]],
    *,
    slots: int = 4,
    context: Sequence[Segment] = (),
    settings: GenerationSettings | None = None,
    options: SpeakOptions | None = None,
    marker: Any = None,
    audio: bool = True,
) -> Iterator[tuple[int, Event | Failed]]:
    """Speak every job (a list of `Line`) as `speak` would alone, ``slots`` at a time together."""
    if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
        raise UsageError(f"batch size must be a positive integer, got {slots!r}", "give a batch size of 1 or more")
    batch = FrameBatch(speech.generator.model, slots=slots)
    mimi_lanes = MimiLanes(speech.mimi, slots) if audio and speech.mimi is not None else None
    free: list[Any] = []
    running: deque[tuple[int, Iterator[Event], Any]] = deque()
    todo = deque(enumerate(jobs))
    while running or todo:
        while todo and len(running) < slots:
            i, lines = todo.popleft()
            lane = free.pop() if free else speech.lane(batch, mimi_lanes)
            events = speak(lane, lines, context=context, settings=settings, options=options, marker=marker, audio=audio)
            running.append((i, events, lane))
        i, events, lane = running.popleft()
        try:
            ev = next(events)
        except StopIteration:
            free.append(lane)
            continue
        except CcsmError as e:
            free.append(lane)
            yield i, Failed(e)
            continue
        yield i, ev
        running.append((i, events, lane))
