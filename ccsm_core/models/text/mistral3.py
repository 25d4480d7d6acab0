"""Mistral 3 (llama.cpp's name for Ministral 3 and later Mistral models): Llama's layout and RoPE,
with Llama 4 attention temperature where the file gives ``attention.temperature_scale``: queries
scaled by ``1 + beta * log(1 + floor(pos / n))``, ``n`` the RoPE's original context length."""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import FormatError
from ...schema import real
from ..config import LlamaConfig
from ..llama import LayerOptions
from .arch import Meta, TextArch


@dataclass(frozen=True)
class Mistral3(TextArch):
    def layer_options(self, meta: Meta, stack: LlamaConfig) -> LayerOptions:
        beta = real(
            meta("attention.temperature_scale", 0.0), "attention.temperature_scale", "model", low=-1e6, high=1e6
        )
        if beta == 0.0:
            return LayerOptions()
        length = meta("rope.scaling.original_context_length", stack.max_seq_len)
        if not math.isfinite(beta) or not isinstance(length, int) or not 0 < length <= 1 << 31:
            raise FormatError(
                f"attention temperature {beta} over {length!r} positions is not valid",
                "the file's attention.temperature_scale or rope.scaling.original_context_length is broken",
            )
        return LayerOptions(temperature=(beta, length))


ARCH = Mistral3("mistral3", hf_names=("ministral3", "mistral3"))
