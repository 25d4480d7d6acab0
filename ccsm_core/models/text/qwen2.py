"""Qwen2: q/k/v biases (read wherever the file has them); RoPE on halves (NEOX)."""

from .arch import TextArch

ARCH = TextArch("qwen2", neox_rope=True, hf_names=("qwen2",))
