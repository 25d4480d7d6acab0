"""CSM and Mimi on ggml-cpu against the original's recordings (the core's fixtures), and
quantized CSM against the NumPy backend running the same dequantized weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ccsm_core.models.loader import load_csm
from ccsm_core.testing.parity import FixtureParity, forced_logits

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"
Q8_LOGIT_TOL = 0.1  # GGML rounds activations to 8 bits for Q8_0 dot products (measured 0.055)


class TestGgmlParity(FixtureParity):
    backend_name = "ggml-cpu"
    fixture_dir = FIXTURE


def test_q8_0_csm_matches_numpy_on_same_weights(tmp_path):
    from ccsm_core.formats.csm_gguf import convert_csm

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
