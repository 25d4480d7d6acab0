"""speak_many on ggml-cpu (the demo model): jobs whose Mimi streams are decoded together give
every job's events bitwise as `speak` alone, in stream and non-stream mode."""

from __future__ import annotations

import pytest
from ccsm_cpu.backend import GgmlBackend

from ccsm_core.generator import GenerationSettings
from ccsm_core.pipeline import SpeakOptions
from ccsm_core.speech import load_speech
from ccsm_core.testing.speak_many import JOBS, check_jobs_are_each_job_alone


@pytest.mark.parametrize("stream", [False, True])
def test_jobs_equal_each_job_alone(stream):
    with GgmlBackend(threads=2, min_parallel_work=0) as be:
        speech = load_speech("demo", be)
        settings = GenerationSettings(seed=6, temperature=0.9, max_audio_ms=880)
        steps = check_jobs_are_each_job_alone(speech, JOBS, settings, SpeakOptions(stream=stream))
    assert max(b for b, _ in steps) >= 3
