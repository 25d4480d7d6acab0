"""CSM and Mimi on ggml-cpu against the original's recordings (the core's fixtures), and
quantized CSM against the NumPy backend running the same dequantized weights."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ccsm_core.generator import GenerationSettings, Generator, Segment
from ccsm_core.models.loader import load_csm
from ccsm_core.models.mimi import load_mimi

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"
CASES = json.loads((FIXTURE / "cases.json").read_text())
Q8_LOGIT_TOL = 0.1  # GGML rounds activations to 8 bits for Q8_0 dot products (measured 0.055)


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE / "reference.npz")


@pytest.fixture(scope="module")
def mimi_ref():
    return np.load(FIXTURE / "mimi_reference.npz")


@pytest.mark.parametrize("case", ["text", "ctx"])
def test_csm_matches_original(case, ref):
    spec = CASES["cases"][case]
    lm = load_csm(FIXTURE, "ggml-cpu")
    ctx = []
    if spec["context"]:
        tokens, mask = ref[f"{case}_prompt_tokens"], ref[f"{case}_prompt_mask"]
        rows = tokens[mask[:, :32].all(axis=1)][:-1]
        ctx = [Segment(spec["context"]["speaker"], spec["context"]["text"], codes=rows[:, :32].T)]
    logits: list[np.ndarray] = []
    frames = Generator(lm.model, lm.tokenizer).generate(
        spec["text"], spec["speaker"], ctx, GenerationSettings(max_audio_ms=800, topk=1, temperature=1.0),
        trace=lambda n, x: logits.append(np.array(x)) if n.startswith("logits") else None)
    np.testing.assert_array_equal(frames, ref[f"{case}_frames"])
    assert np.max(np.abs(np.stack(logits).reshape(10, 32, -1) - ref[f"{case}_logits"])) <= 1e-3


def test_mimi_matches_original(mimi_ref):
    from ccsm_core.backends import get_backend

    mimi = load_mimi(FIXTURE / "mimi.safetensors", FIXTURE / "mimi_config.json", get_backend("ggml-cpu"))
    np.testing.assert_array_equal(mimi.encode(mimi_ref["enc_in"][0, 0]), mimi_ref["enc_codes"][0])
    wave = mimi.decode(mimi_ref["dec_codes"][0])
    assert np.max(np.abs(wave - mimi_ref["dec_out"][0, 0])) <= 1e-4
    dec = mimi.stream_decoder()
    streamed = np.concatenate([dec.step(mimi_ref["dec_codes"][0][:, t:t + 1]) for t in range(10)])
    assert np.max(np.abs(streamed - wave)) <= 1e-5


def forced_logits(path, backend: str, frames: np.ndarray) -> np.ndarray:
    lm = load_csm(path, backend)
    model = lm.model
    tokens, mask = Generator(model, lm.tokenizer).prompt("Hello from CSM.", 0)
    bb, dec = model.new_caches()
    positions, out = np.arange(len(tokens)), []
    for frame in frames:
        h = model.backbone_step(tokens, mask, positions, bb)
        model.frame(h, lambda i, logits, frame=frame: (out.append(logits), int(frame[i]))[1], dec)
        tokens = np.zeros((1, 33), np.int64)
        tokens[0, :32] = frame
        mask = np.zeros_like(tokens, bool)
        mask[0, :32] = True
        positions = positions[-1:] + 1
    return np.stack(out)


def test_q8_0_csm_matches_numpy_on_same_weights(tmp_path, ref):
    from ccsm_core.formats.csm_gguf import convert_csm

    path = convert_csm(FIXTURE, tmp_path / "q8.gguf", "q8_0")
    want = forced_logits(path, "numpy", ref["text_frames"])  # NumPy dequantizes the q8_0 weights
    got = forced_logits(path, "ggml-cpu", ref["text_frames"])
    assert np.max(np.abs(got - want)) <= Q8_LOGIT_TOL
    top2 = np.sort(want, axis=-1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 2 * Q8_LOGIT_TOL
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(got.argmax(-1)[clear], want.argmax(-1)[clear])
