"""Mistral: Llama's layout and RoPE (sliding-window attention is not used at these lengths)."""

from .arch import TextArch

ARCH = TextArch("mistral")
