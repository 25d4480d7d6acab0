"""speak_many decodes its jobs' Mimi streams together (`ccsm_core.mimi_lanes`) on the demo
model: every job's events (Audio samples, Finished audio, frames, timestamps) equal `speak`
alone, bitwise, in stream and non-stream mode, with retried sentences, pauses, jobs of
different lengths and a job that fails half way; and the jobs' frames did share Mimi steps."""

from __future__ import annotations

import pytest

from ccsm_core.generator import GenerationSettings
from ccsm_core.pipeline import SpeakOptions
from ccsm_core.speech import load_speech
from ccsm_core.testing.speak_many import JOBS, check_jobs_are_each_job_alone


@pytest.fixture(scope="module")
def speech():
    return load_speech("demo", "numpy")


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
def test_jobs_equal_each_job_alone_and_share_mimi_steps(speech, jobs, settings, options):
    steps = check_jobs_are_each_job_alone(speech, jobs, settings, options)
    assert max(b for b, _ in steps) >= 3  # several jobs' frames in one step
    assert len(steps) < sum(b for b, _ in steps) and sum(k for _, k in steps) < sum(b * k for b, k in steps)


def test_frames_only_jobs_open_no_mimi_stream(speech):
    from ccsm_core.pipeline import Finished
    from ccsm_core.speak_many import speak_many

    settings = GenerationSettings(seed=1, max_audio_ms=240)
    evs = [ev for _, ev in speak_many(speech, JOBS[:2], settings=settings, audio=False)]
    assert all(ev.audio is None for ev in evs if isinstance(ev, Finished))
