"""A check any backend can run: `speak_many` jobs (their Mimi streams decoded together through
`ccsm_core.mimi_lanes`) give every job's events bitwise as `speak` alone gives them, and the
jobs' frames share Mimi steps."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from typing import Any
from unittest import mock

import numpy as np

from ..errors import CcsmError
from ..generator import GenerationSettings
from ..models.mimi_batch import MimiBatchDecoder
from ..pipeline import DECODE_CHUNK, Finished, Line, SentenceDone, SentenceStarted, SpeakOptions, _silence, speak
from ..speak_many import Failed, speak_many

JOBS = [
    [Line("One. Two. Three.")],
    [Line("Short.")],
    [Line("Fine."), Line("A bad speaker.", -1)],  # fails at its second sentence
    [Line("Four here."), Line("And five.", 1)],
    [Line("Late.")],  # waits for a free slot
]
FAILS = JOBS[2]


def same(a: Any, b: Any) -> None:
    """Assert two events are equal, arrays bitwise."""
    assert type(a) is type(b), (a, b)
    if isinstance(a, Failed):
        assert type(a.error) is type(b.error) and str(a.error) == str(b.error)
        return
    for f in fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, np.ndarray) or isinstance(y, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape, f.name
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        else:
            assert x == y, f.name


def decoded_as_before(speech: Any, events: list, options: SpeakOptions) -> np.ndarray:
    """The audio a fresh stream decoder gives for the events' kept frames, stepped as the
    pipeline always did: each pause and non-stream sentence in chunks of `DECODE_CHUNK`,
    streamed sentences frame by frame."""
    dec = speech.mimi.stream_decoder()
    pause = _silence(speech.mimi, options.pause_frames)
    out = []
    for ev in events:
        parts = []
        if isinstance(ev, SentenceStarted) and ev.sentence.index:
            parts = [pause[i : i + DECODE_CHUNK] for i in range(0, len(pause), DECODE_CHUNK)]
        if isinstance(ev, SentenceDone):
            n = 1 if options.stream else DECODE_CHUNK
            parts = [ev.frames[i : i + n] for i in range(0, len(ev.frames), n)]
        out += [dec.step(p.T) for p in parts]
    return np.concatenate([np.zeros(0, np.float32), *out])


def alone(speech: Any, lines: Sequence[Line], settings: GenerationSettings, options: SpeakOptions) -> list:
    """`speak` on a fresh lane: its events, a `Failed` last if it failed."""
    out: list = []
    try:
        for ev in speak(speech.lane(), lines, settings=settings, options=options):
            out.append(ev)
    except CcsmError as e:
        out.append(Failed(e))
    return out


def check_jobs_are_each_job_alone(
    speech: Any, jobs: Sequence[Sequence[Line]], settings: GenerationSettings, options: SpeakOptions, slots: int = 4
) -> list[tuple[int, int]]:
    """Assert every job of ``speak_many`` equals it alone (and its audio the frames decoded as
    before); returns ``(streams, frames)`` of every batched Mimi step."""
    steps: list[tuple[int, int]] = []
    step = MimiBatchDecoder.step

    def counted(self: MimiBatchDecoder, codes: Any, first: int = 0) -> np.ndarray:
        steps.append((np.shape(codes)[0], np.shape(codes)[2]))
        return step(self, codes, first)

    got: dict[int, list] = {i: [] for i in range(len(jobs))}
    with mock.patch.object(MimiBatchDecoder, "step", counted):
        for i, ev in speak_many(speech, jobs, slots=slots, settings=settings, options=options):
            got[i].append(ev)
    for i, lines in enumerate(jobs):
        want = alone(speech, lines, settings, options)
        assert len(got[i]) == len(want), i
        for a, b in zip(got[i], want):
            same(a, b)
        assert isinstance(want[-1], Failed if lines is FAILS else Finished), want[-1]
        if isinstance(want[-1], Finished):
            np.testing.assert_array_equal(want[-1].audio, decoded_as_before(speech, want, options))
    return steps
