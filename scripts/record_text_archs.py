"""Write a tiny random GGUF of every text architecture and record llama.cpp's logits on it, as
tests/fixtures/text-archs/ holds them (needs llama-cpp-python 0.3.36, i.e. llama.cpp b11312).

    python scripts/record_text_archs.py tests/fixtures/text-archs [CASE ...]

(every case without names; with names, only those).

For each architecture ``<arch>.gguf`` (f32 weights, GGUF names and metadata as llama.cpp's
converter writes them) and ``<arch>.json``: the token ids, llama.cpp's logits at every position
(float32 KV cache, so only the arithmetic differs), the CPU features llama.cpp reported and the
ggml kernel family of the machine. The shapes exercise what each architecture adds: per-head q/k
norms, sliding-window layers, layers without RoPE, RoPE scaling, attention temperature.

The RoPE-scaling cases (`SCALED`: YaRN on mistral3 and qwen3, LongRoPE on phi3 with its long and
its short factors) run 48 positions with a small RoPE base, so the scaled frequencies move the
angles by radians, not by rounding.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ccsm_core.formats.gguf_writer import write_gguf  # noqa: E402

ARCHS = ("llama", "qwen2", "phi3", "gemma", "qwen3", "gemma3", "smollm3", "mistral3")
VOCAB = ["<s>", "</s>", *"abcdefghijklmn", "ab", "cd"]
IDS = [0, 2, 3, 16, 4, 5, 6, 17, 7, 8, 9, 2]
D, FF, H, KV = 32, 64, 4, 2
LAYERS = {"gemma3": 6, "smollm3": 4}
HEAD = {"gemma": 16, "qwen3": 16, "gemma3": 16}  # head sizes other than D / H (key_length)
TIED = ("gemma", "gemma3", "smollm3")
NEOX = ("qwen2", "phi3", "gemma", "qwen3", "gemma3")
IDS_LONG = [0] + [(7 * i + 3) % 16 + 2 for i in range(47)]  # 48 positions (llama.cpp's context is 64)
# RoPE-scaling cases: name -> (architecture, metadata added (without the arch prefix), head size)
SCALED: dict[str, tuple[str, dict, int]] = {
    # (betas and extrapolation factor in a file are not read by llama.cpp for these architectures:
    # the mistral3 case gives betas it must ignore, and a log multiplier it reads)
    "mistral3-yarn": (
        "mistral3",
        {
            "rope.freq_base": 100.0,
            "rope.scaling.type": "yarn",
            "rope.scaling.factor": 4.0,
            "rope.scaling.original_context_length": 16,
            "rope.scaling.yarn_beta_fast": 16.0,
            "rope.scaling.yarn_beta_slow": 0.5,
            "rope.scaling.yarn_log_multiplier": 0.5,
            "attention.temperature_scale": 0.25,
        },
        16,
    ),
    "qwen3-yarn": (
        "qwen3",
        {
            "rope.freq_base": 100.0,
            "rope.scaling.type": "yarn",
            "rope.scaling.factor": 4.0,
            "rope.scaling.original_context_length": 16,
        },
        16,
    ),
    # Phi-3's LongRoPE as llama.cpp's converter writes it: context 4x the original, attention
    # factor sqrt(1 + ln 4 / ln original); llama.cpp (context 64, padded to 256) takes the long
    # factors when the original context is below 256, the short ones otherwise
    "phi3-longrope": ("phi3", {"rope.freq_base": 100.0, "rope.scaling.original_context_length": 16}, 8),
    "phi3-longrope-short": ("phi3", {"rope.freq_base": 100.0, "rope.scaling.original_context_length": 256}, 8),
}


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


def scaled(name: str) -> tuple[str, dict, dict, list[int]]:
    """(architecture, metadata, tensors, token ids) of the RoPE-scaling case ``name``."""
    arch, extra, hd = SCALED[name]
    md, t = tiny(arch, seed=1 + list(SCALED).index(name), head=hd)
    md.update({f"{arch}.{k}": v for k, v in extra.items()})
    md[f"{arch}.rope.dimension_count"] = hd
    if arch == "phi3":
        original = extra["rope.scaling.original_context_length"]
        md["phi3.context_length"] = 4 * original
        md["phi3.rope.scaling.attn_factor"] = float(np.sqrt(1 + np.log(4.0) / np.log(original)))
        rng = np.random.default_rng(7)
        t["rope_factors_long.weight"] = rng.uniform(1.0, 8.0, hd // 2).astype(np.float32)
        t["rope_factors_short.weight"] = rng.uniform(0.5, 2.0, hd // 2).astype(np.float32)
    return arch, md, t, IDS_LONG


def cases() -> list[str]:
    return [*ARCHS, *SCALED]


def main(out: Path, names: list[str]) -> None:
    import llama_cpp

    from tests.llama_cpp_run import llama_cpp_logits, system_info

    out.mkdir(parents=True, exist_ok=True)
    try:
        from ccsm_cpu.lib import load

        family = load().kernel_family()
    except Exception:  # the recording does not need ccsm-cpu
        family = "unknown"
    for name in names or cases():
        if name in SCALED:
            arch, md, t, ids = scaled(name)
        else:
            arch, ids = name, IDS
            md, t = tiny(arch)
        path = write_gguf(out / f"{name}.gguf", md, t, arch)
        logits, features = llama_cpp_logits(path, ids), system_info()
        record = {
            "source": f"llama.cpp through llama-cpp-python {llama_cpp.__version__}, CPU, 2 threads, float32 KV "
            f"cache, no flash attention, on {os.uname().machine}",
            "arch": arch,
            "ids": ids,
            "logits": [[round(float(v), 7) for v in row] for row in logits],
            "cpu_features": features,
            "kernel_family": family,
            "note": "Recorded by scripts/record_text_archs.py from the .gguf beside this file.",
        }
        (out / f"{name}.json").write_text(json.dumps(record) + "\n")
        print(f"{name}: {path.stat().st_size} bytes, logits {logits.shape}, max |logit| {np.abs(logits).max():.3f}")


if __name__ == "__main__":
    main(Path(sys.argv[1]), sys.argv[2:])
