"""speak_many decodes its jobs' Mimi streams together (`ccsm_core.mimi_lanes`) on the demo
model: every job's events (Audio samples, Finished audio, frames, timestamps) equal `speak`
alone, bitwise, in stream and non-stream mode, with retried sentences, pauses, jobs of
different lengths and a job that fails half way; and the jobs' frames did share Mimi steps."""

from __future__ import annotations

from dataclasses import fields

import numpy as np
import pytest

from ccsm_core.generator import GenerationSettings
from ccsm_core.models.mimi_batch import MimiBatchDecoder
from ccsm_core.pipeline import (
    DECODE_CHUNK,
    Finished,
    Line,
    SentenceDone,
    SentenceStarted,
    SpeakOptions,
    _silence,
    speak,
)
from ccsm_core.speak_many import Failed, speak_many
from ccsm_core.speech import load_speech

JOBS = [
    [Line("One. Two. Three.")],
    [Line("Short.")],
    [Line("Fine."), Line("A bad speaker.", -1)],  # fails at its second sentence
    [Line("Four here."), Line("And five.", 1)],
    [Line("Late.")],  # waits for a free slot
]


@pytest.fixture(scope="module")
def speech():
    return load_speech("demo", "numpy")


def same(a, b) -> None:
    """Two events are equal, arrays bitwise."""
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


def decoded_as_before(speech, events, options) -> np.ndarray:
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


def alone(speech, lines, settings, options):
    out = []
    try:
        for ev in speak(speech.lane(), lines, settings=settings, options=options):
            out.append(ev)
    except Exception as e:
        out.append(Failed(e))
    return out


@pytest.mark.parametrize(
    "jobs,settings,options",
    [
        # non-stream, no cap: every demo sentence runs away and is generated again (undo)
        (JOBS[1:4], GenerationSettings(seed=3, temperature=0.9, topk=50), SpeakOptions(retries=1, pause_ms=240)),
        # stream: audio frame by frame, short sentences
        (JOBS, GenerationSettings(seed=4, temperature=0.9, max_audio_ms=720), SpeakOptions(stream=True)),
        # non-stream with a cap (no retries): chunks of 8 and a remainder
        (JOBS, GenerationSettings(seed=5, temperature=0.9, max_audio_ms=1040), SpeakOptions()),
    ],
)
def test_jobs_equal_each_job_alone_and_share_mimi_steps(speech, monkeypatch, jobs, settings, options):
    steps: list[tuple[int, int]] = []  # (streams, frames) of each batched Mimi step
    step = MimiBatchDecoder.step

    def counted(self, codes, first=0):
        steps.append(np.shape(codes)[:3:2])
        return step(self, codes, first)

    monkeypatch.setattr(MimiBatchDecoder, "step", counted)
    got: dict[int, list] = {i: [] for i in range(len(jobs))}
    for i, ev in speak_many(speech, jobs, slots=4, settings=settings, options=options):
        got[i].append(ev)
    monkeypatch.setattr(MimiBatchDecoder, "step", step)
    for i, lines in enumerate(jobs):
        want = alone(speech, lines, settings, options)
        assert len(got[i]) == len(want), i
        for a, b in zip(got[i], want):
            same(a, b)
        assert isinstance(want[-1], Failed if lines is JOBS[2] else Finished)
        if isinstance(want[-1], Finished):
            np.testing.assert_array_equal(want[-1].audio, decoded_as_before(speech, want, options))
    assert max(b for b, _ in steps) >= 3  # several jobs' frames in one step
    decoded = sum(b * k for b, k in steps)
    assert len(steps) < sum(b for b, _ in steps) and sum(k for _, k in steps) < decoded
