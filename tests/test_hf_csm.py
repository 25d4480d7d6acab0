"""CSM in the transformers layout gives the original's frames exactly.

The tiny original fixture (tests/fixtures/csm-tiny) is rewritten here as transformers' converters
write CsmForConditionalGeneration: names mapped, q/k rows permuted for rotate-half RoPE, the
audio head as ``codebooks_head`` [31, decoder dim, vocab], the tied decoder embedding, the RoPE
scaling rewritten (factor 32, low 0.125, high 0.5, original length 1024), Mimi inside under
transformers' Mimi names with q/k/v split and permuted, sharded safetensors with an index.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from ccsm_core.cli import cli
from ccsm_core.errors import FormatError
from ccsm_core.formats.safetensors import load_safetensors, save_safetensors
from ccsm_core.generator import GenerationSettings, Generator
from ccsm_core.loading.csm import load_csm
from ccsm_core.loading.hf_text import unpermute
from ccsm_core.testing.parity import fixture_context

FIXTURE = Path(__file__).parent / "fixtures" / "csm-tiny"
CASES = json.loads((FIXTURE / "cases.json").read_text())
ROPE = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 0.125, "high_freq_factor": 0.5}
ROPE["original_max_position_embeddings"] = 1024
# transformers' Mimi converter: substring replacements in this order
MIMI_TO_HF = [
    ("conv.conv.conv", "conv"),
    ("convtr.convtr.convtr", "conv"),
    ("conv.conv", "conv"),
    ("convtr.convtr", "conv"),
    ("quantizer.rvq_first.vq", "quantizer.semantic_residual_vector_quantizer"),
    ("quantizer.rvq_first", "quantizer.semantic_residual_vector_quantizer"),
    ("quantizer.rvq_rest.vq", "quantizer.acoustic_residual_vector_quantizer"),
    ("quantizer.rvq_rest", "quantizer.acoustic_residual_vector_quantizer"),
    ("_codebook", "codebook"),
    ("_initialized", "initialized"),
    ("embedding_sum", "embed_sum"),
    ("encoder.model", "encoder.layers"),
    ("decoder.model", "decoder.layers"),
    ("encoder_transformer.transformer", "encoder_transformer"),
    ("decoder_transformer.transformer", "decoder_transformer"),
    ("linear1", "mlp.fc1"),
    ("linear2", "mlp.fc2"),
    ("self_attn.out_proj", "self_attn.o_proj"),
    ("norm1", "input_layernorm"),
    ("norm2", "post_attention_layernorm"),
    ("layer_scale_1", "self_attn_layer_scale"),
    ("layer_scale_2", "mlp_layer_scale"),
]
CSM_TO_HF = [
    (r"^backbone\.layers\.(\d+)", r"backbone_model.layers.\1"),
    (r"^decoder\.layers\.(\d+)", r"depth_decoder.model.layers.\1"),
    (r"\.attn\.", ".self_attn."),
    (r"output_proj", "o_proj"),
    (r"\.w1\.", ".gate_proj."),
    (r"\.w2\.", ".down_proj."),
    (r"\.w3\.", ".up_proj."),
    (r"sa_norm\.scale", "input_layernorm.weight"),
    (r"mlp_norm\.scale", "post_attention_layernorm.weight"),
    (r"^text_embeddings", "embed_text_tokens"),
    (r"^audio_embeddings", "backbone_model.embed_tokens.embed_audio_tokens"),
    (r"^codebook0_head", "lm_head"),
    (r"^audio_head$", "depth_decoder.codebooks_head.weight"),
    (r"^projection", "depth_decoder.model.inputs_embeds_projector"),
    (r"^decoder\.norm\.scale", "depth_decoder.model.norm.weight"),
    (r"^backbone\.norm\.scale", "backbone_model.norm.weight"),
]


def hf_name(name: str, rules) -> str:
    for pattern, repl in rules:
        name = re.sub(pattern, repl, name)
    return name


def flavor_config(f: dict) -> dict:
    return {
        "hidden_size": f["embed_dim"],
        "intermediate_size": f["intermediate_dim"],
        "num_hidden_layers": f["num_layers"],
        "num_attention_heads": f["num_heads"],
        "num_key_value_heads": f["num_kv_heads"],
        "max_position_embeddings": f["max_seq_len"],
        "rms_norm_eps": f["norm_eps"],
        "rope_theta": f["rope_base"],
        "rope_scaling": dict(ROPE),
    }


def codec_config(m: dict) -> dict:
    s, t, q = m["seanet"], m["transformer"], m["quantizer"]
    return {
        "model_type": "mimi",
        "hidden_size": s["dimension"],
        "num_filters": s["n_filters"],
        "num_residual_layers": s["n_residual_layers"],
        "upsampling_ratios": s["ratios"],
        "kernel_size": s["kernel_size"],
        "residual_kernel_size": s["residual_kernel_size"],
        "last_kernel_size": s["last_kernel_size"],
        "dilation_growth_rate": s["dilation_base"],
        "compress": s["compress"],
        "pad_mode": s["pad_mode"],
        "use_conv_shortcut": not s["true_skip"],
        "use_causal_conv": s["causal"],
        "num_attention_heads": t["num_heads"],
        "num_key_value_heads": t["num_heads"],
        "head_dim": t["d_model"] // t["num_heads"],
        "num_hidden_layers": t["num_layers"],
        "intermediate_size": t["dim_feedforward"],
        "sliding_window": t["context"],
        "rope_theta": float(t["max_period"]),
        "layer_scale_initial_scale": t["layer_scale"],
        "vector_quantization_hidden_dimension": q["dimension"],
        "num_quantizers": q["n_q"],
        "codebook_size": q["bins"],
        "sampling_rate": m["sample_rate"],
        "frame_rate": m["frame_rate"],
    }


def write_hf_csm(folder: Path, shards: int = 3) -> Path:
    """The fixture as transformers writes CsmForConditionalGeneration."""
    folder.mkdir(parents=True)
    orig = json.loads((FIXTURE / "config.json").read_text())
    back, dec = (orig["flavors"][orig[k]] for k in ("backbone_flavor", "decoder_flavor"))
    mimi_cfg = json.loads((FIXTURE / "mimi_config.json").read_text())
    out: dict[str, np.ndarray] = {}
    for name, t in load_safetensors(FIXTURE / "model.safetensors").items():
        w = t.numpy()
        if re.search(r"attn\.[qk]_proj\.weight$", name):
            f = back if name.startswith("backbone") else dec
            w = unpermute(w, f["num_heads"] if "q_proj" in name else f["num_kv_heads"])
        out[hf_name(name, CSM_TO_HF)] = w
    out["depth_decoder.model.embed_tokens.weight"] = out["backbone_model.embed_tokens.embed_audio_tokens.weight"]
    heads = mimi_cfg["transformer"]["num_heads"]
    for name, t in load_safetensors(FIXTURE / "mimi.safetensors").items():
        new = name
        for old, repl in MIMI_TO_HF:
            new = new.replace(old, repl)
        w = t.numpy()
        if new.endswith("in_proj_weight"):
            q, k, v = np.split(w, 3)
            for part, value in (("q", unpermute(q, heads)), ("k", unpermute(k, heads)), ("v", v)):
                out["codec_model." + new.replace("in_proj_weight", f"{part}_proj.weight")] = value
        else:
            out["codec_model." + new] = w
    config = flavor_config(back) | {
        "model_type": "csm",
        "architectures": ["CsmForConditionalGeneration"],
        "num_codebooks": orig["audio_num_codebooks"],
        "vocab_size": orig["audio_vocab_size"],
        "text_vocab_size": orig["text_vocab_size"],
        "depth_decoder_config": flavor_config(dec) | {"num_codebooks": 32, "backbone_hidden_size": back["embed_dim"]},
        "codec_config": codec_config(mimi_cfg),
    }
    (folder / "config.json").write_text(json.dumps(config))
    names = sorted(out)
    weight_map = {}
    for i in range(shards):
        shard = f"model-{i + 1:05d}-of-{shards:05d}.safetensors"
        save_safetensors(folder / shard, {n: out[n] for n in names[i::shards]})
        weight_map.update(dict.fromkeys(names[i::shards], shard))
    (folder / "model.safetensors.index.json").write_text(json.dumps({"weight_map": weight_map}))
    shutil.copy(FIXTURE / "tokenizer.json", folder / "tokenizer.json")
    return folder


@pytest.fixture(scope="module")
def hf_csm(tmp_path_factory) -> Path:
    return write_hf_csm(tmp_path_factory.mktemp("hf") / "csm-tiny-hf")


@pytest.mark.parametrize("case", ["text", "ctx"])
def test_frames_are_the_originals(case, hf_csm, reference_backend):
    ref = np.load(FIXTURE / "reference.npz")
    spec = CASES["cases"][case]
    lm = load_csm(hf_csm, reference_backend)
    settings = GenerationSettings(max_audio_ms=CASES["n_frames"] * 80, topk=1, temperature=1.0)
    logits: list[np.ndarray] = []
    frames = Generator(lm.model, lm.tokenizer).generate(
        spec["text"],
        spec["speaker"],
        fixture_context(ref, case, spec),
        settings,
        trace=lambda n, x: logits.append(np.array(x)) if n.startswith("logits") else None,
    )
    np.testing.assert_array_equal(frames, ref[f"{case}_frames"])
    original = load_csm(FIXTURE, reference_backend)
    want: list[np.ndarray] = []
    Generator(original.model, original.tokenizer).generate(
        spec["text"],
        spec["speaker"],
        fixture_context(ref, case, spec),
        settings,
        trace=lambda n, x: want.append(np.array(x)) if n.startswith("logits") else None,
    )
    np.testing.assert_allclose(np.stack(logits), np.stack(want), atol=1e-5, rtol=0)


def test_mimi_inside_is_the_originals(hf_csm, reference_backend):
    from ccsm_core.models.mimi import Mimi

    lm = load_csm(hf_csm, reference_backend)
    mimi = Mimi.from_tensors(reference_backend, lm.mimi_tensors, lm.mimi_config)
    mref = np.load(FIXTURE / "mimi_reference.npz")
    np.testing.assert_array_equal(mimi.encode(mref["enc_in"][0, 0]), mref["enc_codes"][0])
    assert np.max(np.abs(mimi.decode(mref["dec_codes"][0]) - mref["dec_out"][0, 0])) <= 1e-4


def test_run_and_convert_from_the_folder(hf_csm, tmp_path, cli_runner):
    out = tmp_path / "a.wav"
    res = cli_runner.invoke(cli, ["run", "Hi.", "--model", str(hf_csm), "-o", str(out), "--seed", "1"])
    assert res.exit_code == 0, res.output
    gguf = tmp_path / "csm.gguf"
    res = cli_runner.invoke(cli, ["convert", str(hf_csm), "-o", str(gguf), "--type", "f32"])
    assert res.exit_code == 0, res.output
    res = cli_runner.invoke(cli, ["run", "Hi.", "--model", str(gguf), "-o", str(tmp_path / "b.wav"), "--seed", "1"])
    assert res.exit_code == 0, res.output
    import soundfile as sf

    np.testing.assert_array_equal(sf.read(out)[0], sf.read(tmp_path / "b.wav")[0])  # the header names the model


def test_broken_folder_is_one_clear_error(hf_csm, tmp_path, cli_runner):
    bad = tmp_path / "bad"
    shutil.copytree(hf_csm, bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["depth_decoder_config"]["rope_scaling"] = {"rope_type": "yarn", "factor": 2.0}
    (bad / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(FormatError, match="'yarn' is not supported"):
        load_csm(bad, "numpy")
    res = cli_runner.invoke(cli, ["run", "Hi.", "--model", str(bad), "-o", str(tmp_path / "x.wav")])
    assert res.exit_code == 2 and "Traceback" not in res.output
