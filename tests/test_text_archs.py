"""Every text architecture against llama.cpp's own logits on a tiny random GGUF of it.

tests/fixtures/text-archs/ holds, per architecture, the GGUF and llama.cpp's logits at every
position of a 12-token sequence, recorded with llama-cpp-python 0.3.36 (llama.cpp b11312) by
scripts/record_text_archs.py (CPU features in each JSON). The KV cache is float32 on both sides,
so only the order of float32 operations differs: 2e-5. ggml computes GELU from a float16 table
(about 1e-3 off the exact tanh form), so the GeGLU architectures are held to 3e-3; the shapes
make every feature matter far more than that (a sliding window ignored moves logits by 0.4 to 3).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from ccsm_core.errors import FormatError
from ccsm_core.formats.gguf_reader import load_gguf
from ccsm_core.formats.gguf_writer import write_gguf
from ccsm_core.loading.text import load_text_model

FIXTURES = Path(__file__).parent / "fixtures" / "text-archs"
ARCHS = ["llama", "qwen2", "phi3", "gemma", "qwen3", "gemma3", "smollm3", "mistral3"]
GELU = ("gemma", "gemma3")


def recorded(arch: str) -> tuple[Path, list[int], np.ndarray]:
    rec = json.loads((FIXTURES / f"{arch}.json").read_text())
    return FIXTURES / f"{arch}.gguf", rec["ids"], np.asarray(rec["logits"], np.float32)


def all_logits(model, ids: list[int]) -> np.ndarray:
    out = model.forward(np.array(ids), np.arange(len(ids)), model.new_cache(32), all_logits=True)
    return model.be.to_numpy(out)


@pytest.mark.parametrize("arch", ARCHS)
def test_logits_match_llama_cpp(arch, reference_backend):
    path, ids, want = recorded(arch)
    model = load_text_model(path, reference_backend, kv_dtype="float32").model
    tol = 3e-3 if arch in GELU else 2e-5
    np.testing.assert_allclose(all_logits(model, ids), want, atol=tol, rtol=0)
    cache = model.new_cache(32)  # one token at a time on the cache: the same
    steps = np.array([model.next_logits([i], cache) for i in ids])
    np.testing.assert_allclose(steps, want, atol=tol, rtol=0)


def test_the_features_matter(reference_backend):
    """Without the sliding window, the q/k norms or SmolLM3's RoPE-less layers, the logits part
    from llama.cpp's by far more than the tolerance."""
    for arch, change in (
        ("gemma3", lambda m: setattr(m.stack, "options", replace(m.stack.options, sliding=()))),
        ("qwen3", lambda m: [w.pop("q_norm") for w in m.stack.layers]),
        ("smollm3", lambda m: setattr(m.stack, "options", replace(m.stack.options, no_rope=()))),
        ("mistral3", lambda m: setattr(m.stack, "options", replace(m.stack.options, temperature=None))),
    ):
        path, ids, want = recorded(arch)
        model = load_text_model(path, reference_backend, kv_dtype="float32").model
        change(model)
        if arch == "qwen3":
            for w in model.stack.layers:
                w.pop("k_norm")
        assert np.abs(all_logits(model, ids) - want).max() > 0.05, arch


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("gemma3.attention.head_count", 0, "head_count = 0 is not an integer"),
        ("gemma3.attention.head_count_kv", 3, "KV heads into attention heads: 3 does not divide"),
        ("gemma3.block_count", 1 << 20, "block_count = 1048576 is not an integer"),
        ("gemma3.attention.sliding_window", -1, "sliding_window"),
        ("gemma3.attention.sliding_window_pattern", [True, False], "entries for 6 layers"),
        ("gemma3.rope.scaling.type", "yarn", "'yarn' is not supported"),
        ("gemma3.rope.scaling.factor", -2.0, "scaling factor"),
        ("gemma3.attention.layer_norm_rms_epsilon", float("nan"), "epsilon = nan is not a finite number"),
    ],
)
def test_bad_metadata_is_one_clear_error(tmp_path, reference_backend, key, value, message):
    src = load_gguf(FIXTURES / "gemma3.gguf")
    md = {k: v for k, v in src.metadata.items() if not k.startswith("general.")}
    md[key] = value
    path = write_gguf(tmp_path / "bad.gguf", md, dict(src.tensors), "gemma3")
    with pytest.raises(FormatError, match=message):
        load_text_model(path, reference_backend)


def test_mistral_is_not_an_architecture_name(tmp_path, reference_backend):
    """llama.cpp writes Mistral 7B as ``llama``; ``mistral`` is refused with the supported list."""
    from ccsm_core.errors import ModelError

    src = load_gguf(FIXTURES / "llama.gguf")
    md = {k.replace("llama.", "mistral."): v for k, v in src.metadata.items() if not k.startswith("general.")}
    path = write_gguf(tmp_path / "m.gguf", md, dict(src.tensors), "mistral")
    with pytest.raises(ModelError, match="'mistral' is not supported") as e:
        load_text_model(path, reference_backend)
    assert "mistral3" in e.value.hint and "llama" in e.value.hint
