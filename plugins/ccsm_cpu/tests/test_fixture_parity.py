"""CSM and Mimi on ggml-cpu against the original's recordings (the core's fixtures), and
quantized CSM against the NumPy backend running the same dequantized weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ccsm_core.loading.csm import load_csm
from ccsm_core.testing.parity import FixtureParity, forced_logits

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"
Q8_LOGIT_TOL = 0.1  # GGML rounds activations to 8 bits for Q8_0 dot products (measured 0.055)


class TestGgmlParity(FixtureParity):
    backend_name = "ggml-cpu"
    fixture_dir = FIXTURE


def test_q8_0_csm_matches_numpy_on_same_weights(tmp_path):
    from ccsm_core.loading.csm_gguf import convert_csm

    frames = np.load(FIXTURE / "reference.npz")["text_frames"]
    path = convert_csm(FIXTURE, tmp_path / "q8.gguf", "q8_0")
    runs = {}
    for backend in ("numpy", "ggml-cpu"):  # NumPy dequantizes the q8_0 weights
        lm = load_csm(path, backend)
        runs[backend] = forced_logits(lm.model, lm.tokenizer, "Hello from CSM.", 0, frames)
    want, got = runs["numpy"], runs["ggml-cpu"]
    assert np.max(np.abs(got - want)) <= Q8_LOGIT_TOL
    top2 = np.sort(want, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * Q8_LOGIT_TOL
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(got.argmax(-1)[clear], want.argmax(-1)[clear])


@pytest.mark.parametrize("fused", [False, True])
def test_captured_decoder_steps_give_the_original_frames(fused):
    """Without tracing, decoder steps 2..31 are captured once per cache and replayed each frame;
    with a sampler the graph can run (`csm_fused`), one captured graph per frame picks the codes."""
    from ccsm_core.generator import GenerationSettings, Generator

    ref = np.load(FIXTURE / "reference.npz")
    lm = load_csm(FIXTURE, "ggml-cpu")
    gen = Generator(lm.model, lm.tokenizer)
    # a repetition penalty of 1 changes nothing but is no part of a fused plan: the host path
    extra = {} if fused else {"repetition_penalty": 1.0}
    settings = GenerationSettings(max_audio_ms=800, topk=1, temperature=1.0, **extra)
    be = lm.model.be
    for _ in range(2):  # a second generation replays the steps captured on the kept caches
        before = be.stats()["evaluations"]
        frames = gen.generate("Hello from CSM.", 0, (), settings)
        np.testing.assert_array_equal(frames, ref["text_frames"])
        evaluations = be.stats()["evaluations"] - before  # the replays are evaluations too
        assert evaluations < 10 * 3 if fused else evaluations >= 10 * 30


def test_captured_mimi_stream_past_the_ring_equals_batch():
    """Frame-by-frame streaming replays one captured graph after the first frame; 140 frames are
    280 transformer positions, so the ring (265 slots) wraps."""
    from ccsm_cpu.backend import GgmlBackend

    from ccsm_core.loading.mimi import load_mimi

    mimi = load_mimi(FIXTURE / "mimi.safetensors", FIXTURE / "mimi_config.json", GgmlBackend(threads=2))
    codes = np.random.default_rng(3).integers(0, 2048, (32, 140))
    dec = mimi.stream_decoder()
    streamed = np.concatenate([dec.step(codes[:, t : t + 1]) for t in range(140)])
    assert list(dec._steps) == [1]
    np.testing.assert_allclose(streamed, mimi.decode(codes), atol=1e-5, rtol=0)


def test_reused_prompt_rows_give_the_fresh_frames():
    from ccsm_core.testing.parity import assert_prompt_cache_exact

    assert_prompt_cache_exact("ggml-cpu", FIXTURE)
