"""Qwen3: an RMS norm over each query and key head before RoPE; no biases; RoPE on halves (NEOX);
head size from ``key_length``."""

from .arch import TextArch

ARCH = TextArch("qwen3", neox_rope=True, hf_names=("qwen3",))
