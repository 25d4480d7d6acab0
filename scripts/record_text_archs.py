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
from ccsm_core.testing.text_models import ARCHS, tiny  # noqa: E402

IDS = [0, 2, 3, 16, 4, 5, 6, 17, 7, 8, 9, 2]
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
