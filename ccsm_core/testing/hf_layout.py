"""Tiny transformers-layout text models for tests: a GGUF model's tensors renamed, q/k permuted
and norms shifted back to what transformers stores, with its ``config.json``, safetensors (one
file or shards with an index) and a ``tokenizer.json`` over the GGUF vocabulary."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..formats.safetensors import save_safetensors
from ..loading.hf_text import PERMUTED, unpermute
from ..models.text import get_arch
from ..tensors import TensorData, f32_to_bf16

MODEL_TYPES = {"gemma3": "gemma3_text", "mistral3": "ministral3"}
LAYER = {
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_qkv": "self_attn.qkv_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "post_attention_norm": "post_attention_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
}


def hf_tensor_name(name: str, arch: str, fused_up: bool = False) -> str:
    """The transformers name of a GGUF tensor name."""
    top = {"token_embd": "model.embed_tokens", "output_norm": "model.norm", "output": "lm_head"}
    base, kind = name.rsplit(".", 1)
    if base in top:
        return f"{top[base]}.{kind}"
    _, i, part = base.split(".", 2)
    hf = LAYER[part]
    if arch == "gemma3" and part == "ffn_norm":
        hf = "pre_feedforward_layernorm"
    if part == "ffn_up" and fused_up:
        hf = "mlp.gate_up_proj"
    return f"model.layers.{i}.{hf}.{kind}"


def hf_tensors(md: Mapping[str, Any], tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """GGUF-named float tensors -> transformers names and layout (RoPE factors dropped: they come
    from the config)."""
    arch = str(md["general.architecture"])
    heads, kv = int(md[f"{arch}.attention.head_count"]), int(md[f"{arch}.attention.head_count_kv"])
    out = {}
    for name, value in tensors.items():
        if name == "rope_freqs.weight" or name.startswith("rope_factors_"):
            continue
        w = np.asarray(value, np.float32)
        fused = name.endswith("ffn_up.weight") and name.replace("ffn_up", "ffn_gate") not in tensors
        if arch in PERMUTED and name.endswith(("attn_q.weight", "attn_k.weight")):
            w = unpermute(w, heads if "attn_q" in name else kv)
        if arch in ("gemma", "gemma3") and name.endswith("norm.weight"):
            w = w - np.float32(1.0)
        out[hf_tensor_name(name, arch, fused)] = w
    return out


def hf_config_of(md: Mapping[str, Any], tied: bool) -> dict[str, Any]:
    """A transformers ``config.json`` for GGUF metadata of a supported text architecture."""
    a = str(md["general.architecture"])
    get = lambda key, default=None: md.get(f"{a}.{key}", default)  # noqa: E731
    cfg: dict[str, Any] = {
        "architectures": ["ForCausalLM"],
        "model_type": MODEL_TYPES.get(a, get_arch(a).hf_names[0]),
        "hidden_size": int(get("embedding_length")),
        "num_hidden_layers": int(get("block_count")),
        "num_attention_heads": int(get("attention.head_count")),
        "num_key_value_heads": int(get("attention.head_count_kv")),
        "intermediate_size": int(get("feed_forward_length")),
        "max_position_embeddings": int(get("context_length")),
        "rms_norm_eps": float(get("attention.layer_norm_rms_epsilon")),
        "rope_theta": float(get("rope.freq_base")),
        "vocab_size": len(md["tokenizer.ggml.tokens"]),
        "tie_word_embeddings": tied,
        "bos_token_id": md.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": md.get("tokenizer.ggml.eos_token_id"),
    }
    if get("attention.key_length") is not None:
        cfg["head_dim"] = int(get("attention.key_length"))
    if get("rope.scaling.type") == "linear":
        cfg["rope_scaling"] = {"rope_type": "linear", "factor": float(get("rope.scaling.factor"))}
    if a == "gemma3":
        cfg["sliding_window"] = int(get("attention.sliding_window"))
        cfg["rope_local_base_freq"] = 10000.0
        cfg["query_pre_attn_scalar"] = cfg["head_dim"]
    if a == "mistral3":
        cfg["rope_parameters"] = {
            "rope_type": "default",
            "rope_theta": cfg.pop("rope_theta"),
            "llama_4_scaling_beta": float(get("attention.temperature_scale")),
            "original_max_position_embeddings": int(get("rope.scaling.original_context_length")),
        }
    if a == "smollm3":
        cfg["no_rope_layers"] = [int((i + 1) % 4 != 0) for i in range(cfg["num_hidden_layers"])]
    return cfg


def bpe_tokenizer_json(md: Mapping[str, Any]) -> dict[str, Any]:
    """A byte-level BPE ``tokenizer.json`` over a GGUF ``gpt2`` vocabulary (control tokens added)."""
    tokens, types = md["tokenizer.ggml.tokens"], md["tokenizer.ggml.token_type"]
    control = [i for i, t in enumerate(types) if t == 3]
    return {
        "version": "1.0",
        "added_tokens": [
            {"id": i, "content": tokens[i], "single_word": False, "lstrip": False, "rstrip": False, "normalized": False}
            | {"special": True}
            for i in control
        ],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": None,
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {
            "type": "BPE",
            "dropout": None,
            "unk_token": None,
            "continuing_subword_prefix": None,
            "end_of_word_suffix": None,
            "fuse_unk": False,
            "byte_fallback": False,
            "vocab": {t: i for i, t in enumerate(tokens) if i not in control},
            "merges": list(md["tokenizer.ggml.merges"]),
        },
    }


def write_hf_folder(
    folder: Path,
    md: Mapping[str, Any],
    tensors: Mapping[str, np.ndarray],
    *,
    shards: int = 1,
    dtype: Any = np.float32,  # or "BF16"
    config: Mapping[str, Any] | None = None,
) -> Path:
    """Write the model as a transformers folder: ``config.json`` (``config`` overrides keys),
    ``model.safetensors`` or ``shards`` files with ``model.safetensors.index.json``, and the
    tokenizer files."""
    folder.mkdir(parents=True, exist_ok=True)
    hf: dict[str, Any] = {}
    for k, v in hf_tensors(md, tensors).items():
        if dtype == "BF16":
            hf[k] = TensorData(k, v.shape, "BF16", f32_to_bf16(v))
        else:
            hf[k] = np.asarray(v).astype(dtype)
    cfg = hf_config_of(md, tied="output.weight" not in tensors) | dict(config or {})
    (folder / "config.json").write_text(json.dumps(cfg, indent=1))
    names = sorted(hf)
    if shards == 1:
        save_safetensors(folder / "model.safetensors", hf)
    else:
        weight_map: dict[str, str] = {}
        for index in range(shards):
            shard_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
            part = {n: hf[n] for n in names[index::shards]}
            save_safetensors(folder / shard_name, part)
            weight_map.update(dict.fromkeys(part, shard_name))
        (folder / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    (folder / "tokenizer.json").write_text(json.dumps(bpe_tokenizer_json(md)))
    tokens = md["tokenizer.ggml.tokens"]
    tok_cfg = {
        "bos_token": tokens[md["tokenizer.ggml.bos_token_id"]],
        "eos_token": tokens[md["tokenizer.ggml.eos_token_id"]],
    }
    tok_cfg["add_bos_token"] = False
    tok_cfg["chat_template"] = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    (folder / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    return folder
