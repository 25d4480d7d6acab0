"""Every text architecture against llama.cpp's own logits on a tiny random GGUF of it.

tests/fixtures/text-archs/ holds, per architecture, the GGUF and llama.cpp's logits at every
position of a 12-token sequence, recorded with llama-cpp-python 0.3.36 (llama.cpp b11312) by
scripts/record_text_archs.py (CPU features in each JSON). The KV cache is float32 on both sides,
so only the order of float32 operations differs: 2e-5. ggml computes GELU from a float16 table
(about 1e-3 off the exact tanh form), so the GeGLU architectures are held to 3e-3; the shapes
make every feature matter far more than that (a sliding window ignored moves logits by 0.4 to 3).

RoPE scaling has cases of its own (`SCALED`): YaRN on mistral3 (with a log multiplier, and betas
llama.cpp does not read for it) and on qwen3, LongRoPE on phi3 with the long factors (the
original context below llama.cpp's padded context) and with the short ones, over 48 positions
with a small RoPE base so that the scaled frequencies turn the angles by radians.
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
SCALED = ["mistral3-yarn", "qwen3-yarn", "phi3-longrope", "phi3-longrope-short"]
CONTEXT = 64  # llama.cpp's context in the recordings


def recorded(case: str) -> tuple[Path, list[int], np.ndarray]:
    rec = json.loads((FIXTURES / f"{case}.json").read_text())
    return FIXTURES / f"{case}.gguf", rec["ids"], np.asarray(rec["logits"], np.float32)


def all_logits(model, ids: list[int], context: int = CONTEXT) -> np.ndarray:
    out = model.forward(np.array(ids), np.arange(len(ids)), model.new_cache(context), all_logits=True)
    return model.be.to_numpy(out)


@pytest.mark.parametrize("arch", ARCHS + SCALED)
def test_logits_match_llama_cpp(arch, reference_backend):
    path, ids, want = recorded(arch)
    model = load_text_model(path, reference_backend, kv_dtype="float32").model
    tol = 3e-3 if arch in GELU else 2e-5
    np.testing.assert_allclose(all_logits(model, ids), want, atol=tol, rtol=0)
    cache = model.new_cache(CONTEXT)  # one token at a time on the cache: the same
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


def test_the_rope_scaling_matters(tmp_path, reference_backend):
    """Each part of YaRN and LongRoPE moves the logits far beyond the tolerance, and more at
    later positions: YaRN's frequencies and its magnitude each alone, LongRoPE's other factor set,
    its attention factor. Position 0 is never rotated: only the magnitudes can change it."""
    from ccsm_core.models.rope_scaling import RopeScaling

    def changed(case: str, **change) -> np.ndarray:
        path, ids, want = recorded(case)
        src = load_gguf(path)
        md = {k: v for k, v in src.metadata.items() if not k.startswith("general.")}
        arch = str(src.metadata["general.architecture"])
        tensors = dict(src.tensors)
        for key, value in change.items():
            if key.endswith(".weight"):
                tensors[key] = value
            else:
                md[f"{arch}.{key}"] = value
        model = load_text_model(
            write_gguf(tmp_path / f"{case}.gguf", md, tensors, arch), reference_backend, kv_dtype="float32"
        ).model
        return np.abs(all_logits(model, ids) - want).max(axis=1)

    for case in ("mistral3-yarn", "qwen3-yarn"):
        arch = case.split("-")[0]
        # the frequencies alone (linear scaling by the same factor: only the magnitude differs)
        err = changed(case, **{"rope.scaling.type": "linear"})
        assert err.max() > 0.05, case
        # the magnitude alone: an attention factor cancelling it
        path, _, _ = recorded(case)
        rope = RopeScaling.from_metadata(load_gguf(path).metadata, arch, case)
        err = changed(case, **{"rope.scaling.attn_factor": 1 / rope.magnitude()})
        assert rope.magnitude() != 1.0 and err.max() > 0.05, case
    path, _, _ = recorded("phi3-longrope")
    src = load_gguf(path)
    short = src.tensors["rope_factors_short.weight"].numpy()
    err = changed("phi3-longrope", **{"rope_factors_long.weight": short})
    assert err[0] < 1e-5 and err.max() > 0.05
    err = changed("phi3-longrope-short", **{"rope.scaling.attn_factor": 1.0})
    assert err.max() > 0.05


def test_longrope_takes_the_long_factors_beyond_the_original_context(reference_backend):
    """As llama.cpp: the long factors where the context, padded to 256, exceeds the original; a
    session's cache, however small, is made for the session's context."""
    from ccsm_core.loading.text import load_text_model as load
    from ccsm_core.textgen import TextSession

    loaded = load(FIXTURES / "phi3-longrope-short.gguf", reference_backend)  # original context 256
    model = loaded.model
    assert model.stack_for(model.new_cache(256)) is model.stack
    assert model.stack_for(model.new_cache(257)) is model.long_stack is not None
    assert model.stack_for(model.new_cache(64, context=1024)) is model.long_stack
    assert not np.array_equal(model.stack.freqs, model.long_stack.freqs)
    for context, stack in ((200, model.stack), (1024, model.long_stack)):
        session = TextSession(loaded, context=context)
        assert session.cache.capacity < 257 and model.stack_for(session.cache) is stack


def test_longrope_batch_decodes_as_alone(reference_backend):
    """Completions decoded together in a `TextBatch` run LongRoPE's long factors as each alone."""
    from ccsm_core.text_batch import TextBatch
    from ccsm_core.textgen import TextSession, TextSettings

    loaded = load_text_model(FIXTURES / "phi3-longrope.gguf", reference_backend, kv_dtype="float32")
    prompts = [[0, 2, 3, 16, 4], [0, 5, 6, 17, 7, 8, 9]]
    settings = TextSettings(max_tokens=12, temperature=0.0)
    alone = [TextSession(loaded, context=64).generate(p, settings).ids for p in prompts]
    batch = TextBatch(loaded, slots=2, context=64)
    streams = [batch.stream(p, settings) for p in prompts]
    for stream in streams:
        for _ in stream:
            pass
    assert [s.last.ids for s in streams] == alone


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("gemma3.attention.head_count", 0, "head_count = 0 is not an integer"),
        ("gemma3.attention.head_count_kv", 3, "KV heads into attention heads: 3 does not divide"),
        ("gemma3.block_count", 1 << 20, "block_count = 1048576 is not an integer"),
        ("gemma3.attention.sliding_window", -1, "sliding_window"),
        ("gemma3.attention.sliding_window_pattern", [True, False], "entries for 6 layers"),
        ("gemma3.rope.scaling.type", "dynamic", "'dynamic' is not supported"),
        ("gemma3.rope.scaling.type", "yarn", "sliding-window layers is not supported"),
        ("gemma3.rope.scaling.attn_factor", 0.0, "attn_factor"),
        ("gemma3.rope.scaling.original_context_length", -4, "original_context_length"),
        ("gemma3.rope.scaling.factor", -2.0, "scaling.factor"),
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


@pytest.mark.parametrize(
    "case, key, value, message",
    [
        ("qwen3-yarn", "qwen3.rope.freq_base", 1.0, "RoPE base of 1 is not defined"),
        ("mistral3-yarn", "mistral3.rope.scaling.yarn_log_multiplier", -1.0, "yarn_log_multiplier"),
        ("phi3-longrope", "phi3.rope.scaling.attn_factor", float("inf"), "attn_factor"),
    ],
)
def test_bad_rope_scaling_is_one_clear_error(tmp_path, reference_backend, case, key, value, message):
    src = load_gguf(FIXTURES / f"{case}.gguf")
    md = {k: v for k, v in src.metadata.items() if not k.startswith("general.")}
    md[key] = value
    path = write_gguf(tmp_path / "bad.gguf", md, dict(src.tensors), str(src.metadata["general.architecture"]))
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
