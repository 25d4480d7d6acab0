"""Tiny random text models with the real GGUF names and metadata, of every architecture: for the
tests, the conformance suite and the llama.cpp recordings (``scripts/record_text_archs.py``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..formats.gguf_writer import write_gguf

ARCHS = ("llama", "qwen2", "phi3", "gemma", "qwen3", "gemma3", "smollm3", "mistral3")
VOCAB = ["<s>", "</s>", *"abcdefghijklmn", "ab", "cd"]
D, FF, H, KV = 32, 64, 4, 2
LAYERS = {"gemma3": 6, "smollm3": 4}
HEAD = {"gemma": 16, "qwen3": 16, "gemma3": 16}  # head sizes other than D / H (key_length)
TIED = ("gemma", "gemma3", "smollm3")
NEOX = ("qwen2", "phi3", "gemma", "qwen3", "gemma3")


def tiny(arch: str, seed: int = 0, head: int | None = None) -> tuple[dict, dict]:
    """Metadata and f32 tensors of a tiny random model of ``arch`` (heads of size ``head``)."""
    rng = np.random.default_rng(seed)
    layers, hd = LAYERS.get(arch, 2), head or HEAD.get(arch, D // H)
    md: dict = {
        f"{arch}.block_count": layers,
        f"{arch}.context_length": 64,
        f"{arch}.embedding_length": D,
        f"{arch}.feed_forward_length": FF,
        f"{arch}.attention.head_count": H,
        f"{arch}.attention.head_count_kv": KV,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
        f"{arch}.rope.freq_base": 10000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": VOCAB,
        "tokenizer.ggml.token_type": [3, 3] + [1] * (len(VOCAB) - 2),
        "tokenizer.ggml.merges": ["a b", "c d"],
        "tokenizer.ggml.bos_token_id": 0,
        "tokenizer.ggml.eos_token_id": 1,
    }
    if hd != D // H:
        md[f"{arch}.attention.key_length"] = md[f"{arch}.attention.value_length"] = hd
    if arch == "gemma3":
        md["gemma3.attention.sliding_window"] = 3
        md["gemma3.rope.freq_base"] = 100000.0
        md["gemma3.rope.scaling.type"] = "linear"
        md["gemma3.rope.scaling.factor"] = 4.0
    if arch == "mistral3":
        md["mistral3.attention.temperature_scale"] = 0.25
        md["mistral3.rope.scaling.original_context_length"] = 4
    r = lambda *s: (rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32)  # noqa: E731
    norm = lambda n: np.asarray(1 + 0.2 * rng.standard_normal(n), np.float32)  # noqa: E731
    t = {"token_embd.weight": r(len(VOCAB), D), "output_norm.weight": norm(D)}
    if arch not in TIED:
        t["output.weight"] = r(len(VOCAB), D)
    if arch == "llama":  # Llama 3.1's per-pair RoPE divisors
        t["rope_freqs.weight"] = np.linspace(1.0, 8.0, hd // 2).astype(np.float32)
    for i in range(layers):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"], t[p + "ffn_norm.weight"] = norm(D), norm(D)
        if arch == "phi3":
            t[p + "attn_qkv.weight"] = r((H + 2 * KV) * hd, D)
            t[p + "ffn_up.weight"] = r(2 * FF, D)
        else:
            t[p + "attn_q.weight"], t[p + "attn_k.weight"], t[p + "attn_v.weight"] = (
                r(H * hd, D),
                r(KV * hd, D),
                r(KV * hd, D),
            )
            t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"] = r(FF, D), r(FF, D)
        if arch == "qwen2":
            t[p + "attn_q.bias"], t[p + "attn_k.bias"], t[p + "attn_v.bias"] = r(H * hd), r(KV * hd), r(KV * hd)
        if arch in ("qwen3", "gemma3"):
            t[p + "attn_q_norm.weight"], t[p + "attn_k_norm.weight"] = norm(hd), norm(hd)
        if arch == "gemma3":
            t[p + "post_attention_norm.weight"], t[p + "post_ffw_norm.weight"] = norm(D), norm(D)
        t[p + "attn_output.weight"], t[p + "ffn_down.weight"] = r(D, H * hd), r(D, FF)
    return md, t


def write_tiny_text(path: Path, arch: str = "llama", seed: int = 0, context: int = 64) -> Path:
    """`tiny` written as a GGUF file at ``path`` with a context of ``context`` positions."""
    md, t = tiny(arch, seed)
    md[f"{arch}.context_length"] = context
    return write_gguf(path, md, t, arch)
