"""Llama (1-3.x): the reference; RoPE on adjacent pairs (the GGUF converter permutes q/k for it)."""

from .arch import TextArch

ARCH = TextArch("llama")
