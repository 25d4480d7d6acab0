"""Transformers text folders: run directly and converted to GGUF.

Each architecture's tiny GGUF fixture (held to llama.cpp's logits in test_text_archs.py) is
turned into the transformers layout (names, q/k in rotate-half order, Gemma norms without +1,
config.json, one safetensors file or shards with an index, tokenizer files). The folder must
give the GGUF's logits; ``ccsm convert`` must write a GGUF with llama.cpp's tensor names and
metadata keys (checked against the ``gguf`` package's tables) whose logits are the folder's, in
ccsm and, where llama-cpp-python is installed, in llama.cpp itself.

The RoPE-scaling fixtures (YaRN on mistral3 and qwen3, LongRoPE on phi3) become folders whose
config.json holds the scaling as transformers writes it (`scaled_config`): ``rope_parameters`` /
``rope_scaling`` of type yarn with its betas and ``mscale_all_dim``, longrope with the long and
short factors; the folder must give llama.cpp's recorded logits.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from ccsm_core.cli import cli
from ccsm_core.errors import FormatError, ModelError
from ccsm_core.formats.gguf_reader import load_gguf
from ccsm_core.formats.gguf_writer import write_gguf
from ccsm_core.loading.hf_text import llama3_rope_factors
from ccsm_core.loading.text import load_text_model
from ccsm_core.models.config import LlamaConfig
from ccsm_core.testing.hf_layout import write_hf_folder

FIXTURES = Path(__file__).parent / "fixtures" / "text-archs"
ARCHS = ["llama", "qwen2", "phi3", "gemma", "qwen3", "gemma3", "smollm3", "mistral3"]
IDS = [0, 2, 3, 16, 4, 5, 6, 17, 7, 8, 9, 2]
SCALED = ["mistral3-yarn", "qwen3-yarn", "phi3-longrope", "phi3-longrope-short"]
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}


def fixture(case: str) -> tuple[dict, dict]:
    src = load_gguf(FIXTURES / f"{case}.gguf")
    return dict(src.metadata), {k: t.numpy() for k, t in src.items()}


def recorded_ids(case: str) -> list[int]:
    return json.loads((FIXTURES / f"{case}.json").read_text())["ids"]


def logits(path: Path, reference_backend, ids: list[int] = IDS) -> np.ndarray:
    """Logits at every position of ``ids`` on a cache of llama.cpp's recorded context (64)."""
    m = load_text_model(path, reference_backend, kv_dtype="float32").model
    out = m.forward(np.array(ids), np.arange(len(ids)), m.new_cache(64), all_logits=True)
    return reference_backend.to_numpy(out)


def scaled_config(md: dict, t: dict) -> dict:
    """config.json entries of a RoPE-scaling fixture's scaling, as transformers writes them."""
    arch = str(md["general.architecture"])
    get = lambda key: md[f"{arch}.rope.scaling.{key}"]  # noqa: E731
    original = int(get("original_context_length"))
    if arch == "phi3":
        factors = {f"{kind}_factor": t[f"rope_factors_{kind}.weight"].tolist() for kind in ("long", "short")}
        return {"original_max_position_embeddings": original, "rope_scaling": {"type": "longrope", **factors}}
    params = {"rope_type": "yarn", "factor": float(get("factor")), "original_max_position_embeddings": original}
    for key, gguf_key in (("beta_fast", "yarn_beta_fast"), ("beta_slow", "yarn_beta_slow")):
        if f"{arch}.rope.scaling.{gguf_key}" in md:
            params[key] = float(get(gguf_key))
    if arch != "mistral3":
        return {"rope_scaling": params}
    params |= {"mscale": 1.0, "mscale_all_dim": float(get("yarn_log_multiplier"))}
    params |= {"rope_theta": float(md["mistral3.rope.freq_base"])}
    return {"rope_parameters": params | {"llama_4_scaling_beta": float(md["mistral3.attention.temperature_scale"])}}


def reference_gguf(arch: str, tmp_path: Path) -> tuple[Path, dict, dict, dict]:
    """(the GGUF the folder is made from, its metadata, tensors, config overrides). Llama's
    per-pair RoPE divisors become Llama 3 scaling: the reference then holds the divisors of
    torchtune's Llama 3 RoPE (`LlamaConfig.rope_freqs`), an implementation independent of the
    converter's."""
    md, t = fixture(arch)
    if arch in SCALED:
        return FIXTURES / f"{arch}.gguf", md, t, scaled_config(md, t)
    if arch != "llama":
        return FIXTURES / f"{arch}.gguf", md, t, {}
    hd = md["llama.embedding_length"] // md["llama.attention.head_count"]
    scaling = LLAMA3 | {"original_max_position_embeddings": 16}
    base = LlamaConfig(1, 1, 1, hd, 1, rope_base=10000.0, scale_factor=None).rope_freqs()
    scaled = LlamaConfig(1, 1, 1, hd, 1, rope_base=10000.0, scale_factor=8.0, old_context_len=16).rope_freqs()
    t["rope_freqs.weight"] = (base / scaled).astype(np.float32)
    gguf_md = {k: v for k, v in md.items() if not k.startswith("general.")}
    path = write_gguf(tmp_path / "reference.gguf", gguf_md, t, "llama")
    return path, md, t, {"rope_scaling": scaling}


@pytest.mark.parametrize("arch", ARCHS + SCALED)
def test_folder_gives_the_models_logits(arch, tmp_path, reference_backend):
    ref, md, t, overrides = reference_gguf(arch, tmp_path)
    folder = write_hf_folder(tmp_path / arch, md, t, shards=1 + len(arch) % 3, config=overrides)
    ids = recorded_ids(arch)
    np.testing.assert_allclose(
        logits(folder, reference_backend, ids), logits(ref, reference_backend, ids), atol=1e-5, rtol=0
    )
    if arch in SCALED:  # and llama.cpp's own logits on the GGUF the folder was made from
        want = np.asarray(json.loads((FIXTURES / f"{arch}.json").read_text())["logits"], np.float32)
        np.testing.assert_allclose(logits(folder, reference_backend, ids), want, atol=2e-5, rtol=0)


def test_bf16_folder_equals_its_values(tmp_path, reference_backend):
    """bfloat16 weights: q/k rows move as raw bits; the same as the values rounded to bfloat16."""
    from ccsm_core.tensors import bf16_to_f32, f32_to_bf16

    md, t = fixture("qwen3")
    rounded = {k: bf16_to_f32(f32_to_bf16(v)).reshape(v.shape) for k, v in t.items()}
    a = write_hf_folder(tmp_path / "bf16", md, t, shards=2, dtype="BF16")
    b = write_hf_folder(tmp_path / "f32", md, rounded)
    np.testing.assert_array_equal(logits(a, reference_backend), logits(b, reference_backend))


def test_llama3_rope_factors_are_torchtunes():
    for hd, theta, old in ((64, 500000.0, 8192), (128, 500000.0, 8192), (8, 10000.0, 16)):
        base = LlamaConfig(1, 1, 1, hd, 1, rope_base=theta, scale_factor=None).rope_freqs()
        scaled = LlamaConfig(1, 1, 1, hd, 1, rope_base=theta, scale_factor=32.0, old_context_len=old).rope_freqs()
        got = llama3_rope_factors(LLAMA3 | {"factor": 32.0, "original_max_position_embeddings": old}, theta, hd, "c")
        np.testing.assert_allclose(base / got, scaled, rtol=1e-5)


def gguf_names_for(arch: str, layers: int) -> set[str]:
    """Every tensor name llama.cpp defines for ``arch`` (from the gguf package's tables)."""
    import gguf

    model_arch = next(k for k, v in gguf.MODEL_ARCH_NAMES.items() if v == arch)
    names = set()
    for kind in gguf.MODEL_TENSORS[model_arch]:
        pattern = gguf.TENSOR_NAMES[kind]
        for i in range(layers):
            names.update(pattern.format(bid=i) + suffix for suffix in (".weight", ".bias"))
    return names


@pytest.mark.parametrize("case", ARCHS + SCALED)
def test_convert_writes_what_llama_cpp_reads(case, tmp_path, reference_backend, cli_runner):
    import gguf

    ref, md, t, overrides = reference_gguf(case, tmp_path)
    arch, ids = str(md["general.architecture"]), recorded_ids(case)
    # (a folder name with "phi" in it makes llama.cpp look up tokens of the real Phi vocabulary)
    folder = write_hf_folder(tmp_path / arch / "tiny", md, t, shards=2, config=overrides)
    out = tmp_path / f"{arch}.gguf"
    res = cli_runner.invoke(cli, ["convert", str(folder), "-o", str(out), "--type", "f32"])
    assert res.exit_code == 0, res.output
    reader = gguf.GGUFReader(out)
    layers = md[f"{arch}.block_count"]
    names = {x.name for x in reader.tensors}
    assert names == set(t) and names <= gguf_names_for(arch, layers)
    keys = set(reader.fields)
    K = gguf.Keys
    for key in (
        K.General.ARCHITECTURE,
        K.General.FILE_TYPE,
        K.LLM.BLOCK_COUNT.format(arch=arch),
        K.LLM.EMBEDDING_LENGTH.format(arch=arch),
        K.LLM.FEED_FORWARD_LENGTH.format(arch=arch),
        K.LLM.CONTEXT_LENGTH.format(arch=arch),
        K.Attention.HEAD_COUNT.format(arch=arch),
        K.Attention.HEAD_COUNT_KV.format(arch=arch),
        K.Attention.LAYERNORM_RMS_EPS.format(arch=arch),
        K.Rope.FREQ_BASE.format(arch=arch),
        K.Tokenizer.MODEL,
        K.Tokenizer.PRE,
        K.Tokenizer.LIST,
        K.Tokenizer.TOKEN_TYPE,
        K.Tokenizer.MERGES,
        K.Tokenizer.BOS_ID,
        K.Tokenizer.EOS_ID,
        K.Tokenizer.CHAT_TEMPLATE,
    ):
        assert key in keys, key
    assert str(bytes(reader.fields[K.General.ARCHITECTURE].parts[-1]), "utf-8") == arch
    if arch == "gemma3":
        assert K.Attention.SLIDING_WINDOW.format(arch=arch) in keys
    if arch == "mistral3":
        assert K.Attention.TEMPERATURE_SCALE.format(arch=arch) in keys
    if case in SCALED:  # the scaling's keys, with the values of the file the folder came from
        R = K.Rope
        scaling = [R.SCALING_ORIG_CTX_LEN]
        scaling += [R.SCALING_ATTN_FACTOR] if arch == "phi3" else [R.SCALING_TYPE, R.SCALING_FACTOR]
        scaling += [R.SCALING_YARN_LOG_MUL] if arch == "mistral3" else []
        for key in (k.format(arch=arch) for k in scaling):
            field = reader.fields[key]
            value = field.contents() if hasattr(field, "contents") else field.parts[-1][0]
            assert value == (md[key] if isinstance(md[key], str) else pytest.approx(md[key], rel=1e-6)), key
    want = logits(folder, reference_backend, ids)
    np.testing.assert_array_equal(logits(out, reference_backend, ids), want)
    np.testing.assert_allclose(want, logits(ref, reference_backend, ids), atol=1e-5, rtol=0)
    try:
        from tests.llama_cpp_run import llama_cpp_logits
    except ImportError:  # pragma: no cover - llama-cpp-python is optional
        return
    tol = 3e-3 if arch in ("gemma", "gemma3") else 2e-5  # ggml's float16 GELU table (test_text_archs)
    np.testing.assert_allclose(llama_cpp_logits(out, ids), want, atol=tol, rtol=0)


@pytest.mark.parametrize("qtype, stored", [("f16", "F16"), ("bf16", "BF16"), ("q8_0", "Q8_0"), ("q4_0", "Q4_0")])
def test_convert_types(qtype, stored, tmp_path, reference_backend, cli_runner):
    md, t = fixture("qwen2")
    folder = write_hf_folder(tmp_path / "m", md, t)
    out = tmp_path / f"{qtype}.gguf"
    res = cli_runner.invoke(cli, ["convert", str(folder), "-o", str(out), "--type", qtype])
    assert res.exit_code == 0, res.output
    types = {n: x.dtype for n, x in load_gguf(out).items()}
    assert types["blk.0.attn_q.weight"] == stored and types["blk.0.attn_norm.weight"] == "F32"
    assert types["blk.0.attn_q.bias"] == "F32"
    want = logits(folder, reference_backend)
    err = np.abs(logits(out, reference_backend) - want).max()
    assert err < {"f16": 0.01, "bf16": 0.05, "q8_0": 0.05, "q4_0": 0.5}[qtype] * np.abs(want).max()


def test_q4_k_blocks_decode_with_gguf():
    import gguf
    from gguf import quants

    from ccsm_core.formats.q4_k import quantize_q4_k

    rng = np.random.default_rng(1)
    x = (rng.standard_normal((6, 512)) * 0.05).astype(np.float32)
    x[1] += 0.2  # all positive: a zero minimum
    x[2] = 0.0
    x[3, :256] = -0.3  # constant blocks
    y = quants.dequantize(quantize_q4_k(x), gguf.GGMLQuantizationType.Q4_K)
    assert np.abs(y - x).max() <= np.abs(x).max() / 15 + 1e-3
    assert np.abs(y - x).mean() < 0.1 * np.abs(x).mean() + 1e-6
    np.testing.assert_array_equal(y[2], 0)


def test_convert_is_streamed_with_progress(tmp_path, monkeypatch):
    """Tensors are made one at a time as they are written: at most one is alive at once."""
    from ccsm_core.loading import text_convert

    md, t = fixture("llama")
    folder = write_hf_folder(tmp_path / "m", md, t)
    alive, seen, peak = set(), [], [0]
    import weakref

    from ccsm_core.formats import gguf_writer

    real = gguf_writer._encoded

    def spy(planned):
        raw = real(planned)
        seen.append(planned.name)
        alive.add(id(raw))
        weakref.finalize(raw, alive.discard, id(raw))
        peak[0] = max(peak[0], len(alive))
        return raw

    monkeypatch.setattr(gguf_writer, "_encoded", spy)
    steps = []
    text_convert.convert_text(folder, tmp_path / "o.gguf", "q8_0", progress=lambda n, total: steps.append((n, total)))
    assert [n for n, _ in steps] == seen and {total for _, total in steps} == {len(seen)} and peak[0] == 1


def test_bad_folders_are_one_clear_error(tmp_path, cli_runner):
    md, t = fixture("qwen2")
    folder = write_hf_folder(tmp_path / "m", md, t, shards=2)
    cfg = json.loads((folder / "config.json").read_text())
    cases = [
        ({"model_type": "falcon"}, ModelError, "'falcon' is not supported"),
        ({"num_attention_heads": 0}, FormatError, "num_attention_heads = 0 is not an integer"),
        ({"num_key_value_heads": 3}, FormatError, "do not fit"),
        ({"rope_scaling": {"rope_type": "dynamic", "factor": 4.0}}, FormatError, "'dynamic' is not supported"),
        ({"rope_scaling": {"rope_type": "yarn", "factor": -4.0}}, FormatError, "factor"),
        ({"rope_scaling": {"rope_type": "longrope", "long_factor": [1.0]}}, FormatError, "LongRoPE on qwen2"),
        ({"vocab_size": 99}, FormatError, "vocab_size 99"),
    ]
    for change, error, message in cases:
        (folder / "config.json").write_text(json.dumps(cfg | change))
        with pytest.raises(error, match=message):
            load_text_model(folder, "numpy")
        res = cli_runner.invoke(cli, ["generate", "x", "--model", str(folder), "-n", "1"])
        assert res.exit_code == 2 and "Traceback" not in res.output and message.strip("'") in res.output
    (folder / "config.json").write_text(json.dumps(cfg))
    index = json.loads((folder / "model.safetensors.index.json").read_text())
    shard = next(iter(index["weight_map"].values()))
    (folder / shard).unlink()
    with pytest.raises(ModelError, match="shard .* is missing"):
        load_text_model(folder, "numpy")
    folder = write_hf_folder(tmp_path / "m2", md, t, shards=2)
    index["weight_map"]["model.layers.0.mlp.up_proj.weight"] = "../x.safetensors"
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(FormatError, match="maps to"):
        load_text_model(folder, "numpy")


def test_generate_from_folder(tmp_path, cli_runner):
    md, t = fixture("gemma3")
    folder = write_hf_folder(tmp_path / "g", md, t, shards=3)
    res = cli_runner.invoke(cli, ["generate", "abc", "--model", str(folder), "-n", "4", "--temperature", "0", "--json"])
    assert res.exit_code == 0, res.output
    direct = cli_runner.invoke(
        cli, ["generate", "abc", "--model", str(FIXTURES / "gemma3.gguf"), "-n", "4", "--temperature", "0", "--json"]
    )
    assert direct.exit_code == 0, direct.output
    assert json.loads(res.output) == json.loads(direct.output)
