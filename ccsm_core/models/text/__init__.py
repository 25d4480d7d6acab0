"""Llama-family text models: one file per architecture (found by name), the shared model."""

from .arch import TextArch, arch_names, get_arch
from .model import TextConfig, TextLM

__all__ = ["TextArch", "TextConfig", "TextLM", "arch_names", "get_arch"]
