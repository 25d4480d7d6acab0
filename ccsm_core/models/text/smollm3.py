"""SmolLM3: Llama with every fourth layer (3, 7, 11, ...) left without RoPE, as llama.cpp fixes it."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import LlamaConfig
from ..llama import LayerOptions
from .arch import Meta, TextArch

NO_ROPE_EVERY = 4


def no_rope_layers(num_layers: int, every: int = NO_ROPE_EVERY) -> tuple[int, ...]:
    """The layers without RoPE: the last of every ``every``."""
    return tuple(i for i in range(num_layers) if (i + 1) % every == 0)


@dataclass(frozen=True)
class SmolLM3(TextArch):
    def layer_options(self, meta: Meta, stack: LlamaConfig) -> LayerOptions:
        return LayerOptions(no_rope=no_rope_layers(stack.num_layers))


ARCH = SmolLM3("smollm3", hf_names=("smollm3",))
