"""Gemma 3: Gemma's GeGLU, scaled embeddings and stored +1 norms, plus q/k norms, norms after
attention and after the MLP, and sliding-window layers: of every ``sliding_window_pattern``
(6) layers all but the last attend over ``attention.sliding_window`` positions, with RoPE base
10000 (the global layers use ``rope.freq_base`` and its scaling)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ...errors import FormatError
from ..config import LlamaConfig
from ..llama import LayerOptions
from .arch import Meta, TextArch

PATTERN = 6  # llama.cpp's default: five sliding-window layers, then a global one
LOCAL_ROPE_BASE = 10000.0
LAYERS_27B = 62  # llama.cpp scales the 27B model's attention by the embedding width per head


def sliding_layers(num_layers: int, pattern: int) -> tuple[int, ...]:
    """The sliding-window layers: all but the last of every ``pattern`` (none when 0)."""
    return tuple(i for i in range(num_layers) if pattern and i % pattern < pattern - 1)


@dataclass(frozen=True)
class Gemma3(TextArch):
    def layer_options(self, meta: Meta, stack: LlamaConfig) -> LayerOptions:
        window = meta("attention.sliding_window", 0)
        pattern = meta("attention.sliding_window_pattern", PATTERN)
        if isinstance(pattern, (list, np.ndarray)):  # per layer: true = sliding
            flags = [bool(x) for x in pattern]
            if len(flags) != stack.num_layers:
                raise FormatError(
                    f"sliding_window_pattern has {len(flags)} entries for {stack.num_layers} layers",
                    "give sliding_window_pattern one entry per layer",
                )
            sliding = tuple(i for i, f in enumerate(flags) if f)
        elif isinstance(pattern, int) and 0 <= pattern <= stack.num_layers + 1:
            sliding = sliding_layers(stack.num_layers, pattern)
        else:
            raise FormatError(f"sliding_window_pattern {pattern!r} is not valid", "the GGUF file is broken")
        if not isinstance(window, int) or not 0 <= window <= 1 << 24:
            raise FormatError(f"attention.sliding_window {window!r} is not valid", "the GGUF file is broken")
        per_head = stack.embed_dim / stack.num_heads if stack.num_layers == LAYERS_27B else stack.head_dim
        return LayerOptions(sliding=sliding if window else (), window=window, attn_scale=float(per_head) ** -0.5)

    def local_rope_base(self, meta: Meta) -> float | None:
        return meta("rope.freq_base_swa", LOCAL_ROPE_BASE)  # checked by the caller


ARCH = Gemma3("gemma3", activation="gelu_tanh", scaled_embeddings=True, neox_rope=True, hf_names=("gemma3_text",))
