"""Llama (1-3.x), and Mistral 7B / Nemo (llama.cpp writes them as ``llama``): the reference; RoPE
on adjacent pairs (the GGUF converter permutes q/k for it)."""

from .arch import TextArch

ARCH = TextArch("llama", hf_names=("llama", "mistral"))
