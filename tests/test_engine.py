"""The serving engine: requests advance in turn, a frame at a time; queue bound; cancellation."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from ccsm_core.generator import GenerationSettings
from ccsm_core.pipeline import Audio, Finished, Line, Progress, SpeakOptions, speak
from ccsm_core.server.engine import Cancelled, Engine, QueueFull
from ccsm_core.speech import load_speech

from .test_csm_parity import FIXTURE


@pytest.fixture(scope="module")
def speech():
    return load_speech(str(FIXTURE), "numpy")


def job(text, frames=10, seed=1):
    settings = GenerationSettings(max_audio_ms=frames * 80, seed=seed, temperature=0.9)

    def make(lane):
        return speak(lane, [Line(text)], settings=settings, options=SpeakOptions(stream=True))

    return make


def test_requests_interleave_frame_by_frame_and_match_a_lone_run(speech):
    engine = Engine(speech, max_active=2).start()
    try:
        order: list[int] = []
        results: dict[int, Finished] = {}
        streamed: dict[int, list[np.ndarray]] = {0: [], 1: []}

        def consume(i, ticket):
            for ev in ticket:
                if isinstance(ev, Progress):
                    order.append(i)
                if isinstance(ev, Audio):
                    streamed[i].append(ev.samples)
                if isinstance(ev, Finished):
                    results[i] = ev

        tickets = [engine.submit("speech", job("A long one.", 30)), engine.submit("speech", job("Short.", 5, seed=2))]
        threads = [threading.Thread(target=consume, args=(i, t)) for i, t in enumerate(tickets)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(60)
        # the short request finished while the long one was still generating
        assert order.index(1) < 5 and len(order) - 1 - order[::-1].index(1) < order.index(0) + 30
        alone = [
            e
            for e in speak(
                load_speech(str(FIXTURE), "numpy"),
                [Line("A long one.")],
                settings=GenerationSettings(max_audio_ms=2400, seed=1, temperature=0.9),
                options=SpeakOptions(stream=True),
            )
            if isinstance(e, Finished)
        ]
        np.testing.assert_array_equal(results[0].frames, alone[0].frames)
        # the two requests' audio was decoded together, each bitwise as alone
        np.testing.assert_array_equal(results[0].audio, alone[0].audio)
        np.testing.assert_array_equal(np.concatenate(streamed[0]), alone[0].audio)
        assert max(engine._mimi_lanes.sizes) == 2
        assert engine.stats.requests[("speech", "ok")] == 2 and len(engine.stats.ttfa_s) == 2
    finally:
        engine.stop()


def test_queue_bound_and_cancellation(speech):
    engine = Engine(speech, max_active=1, max_queue=1)
    first = engine.submit("speech", job("One.", 200))
    engine.submit("speech", job("Two."))
    with pytest.raises(QueueFull) as err:
        engine.submit("speech", job("Three."))
    assert err.value.retry_after >= 1
    engine.start()
    try:
        got = 0
        with pytest.raises(Cancelled):
            for ev in first:
                if isinstance(ev, Audio):
                    got += 1
                    if got == 3:
                        first.cancel()
        assert got <= 4  # stopped within a frame of the cancel
        assert engine.stats.requests[("speech", "cancelled")] == 1
        deadline = time.monotonic() + 30
        while engine.active and time.monotonic() < deadline:
            time.sleep(0.05)
        assert engine.active == 0 and engine.queue_depth == 0
        assert len(engine._free["speech"]) == 1  # the lane came back
    finally:
        engine.stop()


def test_timeout_and_errors_end_only_their_request(speech):
    engine = Engine(speech, max_active=2, timeout_s=0.5).start()
    try:
        slow = engine.submit("speech", job("Slow. " * 40, 1000))  # forty sentences
        with pytest.raises(Cancelled, match="ran past"):
            list(slow)

        def broken(lane):
            raise ValueError("boom")

        with pytest.raises(ValueError):
            list(engine.submit("speech", broken))
        engine.timeout_s = 60
        assert isinstance(list(engine.submit("speech", job("Fine.", 3)))[-1], Finished)
    finally:
        engine.stop()


def test_text_requests_share_decode_steps_and_match_a_lone_run(tmp_path):
    from ccsm_core.loading.text import load_text_model
    from ccsm_core.testing.text_models import write_tiny_text
    from ccsm_core.textgen import TextSession, TextSettings

    loaded = load_text_model(write_tiny_text(tmp_path / "t.gguf", "llama", seed=2, context=512), "numpy")
    prompts = [[0, 2, 3, 4], [0, 5, 6, 7, 8, 9]]
    settings = [TextSettings(max_tokens=n, temperature=0.9, seed=i) for i, n in enumerate((30, 12))]
    engine = Engine(text=loaded, max_active=2).start()
    try:
        tickets = [engine.submit("text", lambda lane, p=p, s=s: lane.stream(p, s)) for p, s in zip(prompts, settings)]
        texts = ["".join(t) for t in tickets]
        steps = engine._text_batch.steps
    finally:
        engine.stop()
    alone = [TextSession(loaded).generate(p, s) for p, s in zip(prompts, settings)]
    assert texts == [c.text for c in alone]
    assert steps < sum(len(c.ids) for c in alone)  # the two requests were decoded together
