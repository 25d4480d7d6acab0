"""What a text architecture is, and finding one by its GGUF ``general.architecture`` name.

Each architecture is one module of this package (``llama.py``, ``qwen2.py``, ...) whose ``ARCH``
is a `TextArch`: how its RoPE pairs dimensions, its activation, whether embeddings are scaled,
and which GGUF tensors make a layer's weights. Adding an architecture is adding one such file.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import BUG_HINT, FormatError, ModelError
from ...tensors import take_rows
from ..config import LlamaConfig
from ..llama import LayerOptions

_NOT_ARCHS = {"arch", "metadata", "model", "stack"}  # the modules of this package that are not architectures
# optional per-layer norms: GGUF name -> the stack's key
EXTRA_NORMS = {
    "attn_q_norm": "q_norm",
    "attn_k_norm": "k_norm",
    "post_attention_norm": "post_attn_norm",
    "post_ffw_norm": "post_ffn_norm",
}
Meta = Callable[[str, Any], Any]  # an architecture's metadata value by key (without the prefix)


def need_tensor(tensors: Mapping[str, Any], name: str) -> Any:
    """``tensors[name]``, or a `FormatError` saying the file is incomplete."""
    if name not in tensors:
        raise FormatError(f"tensor {name!r} is missing", "the GGUF file is incomplete or of another architecture")
    return tensors[name]


@dataclass(frozen=True)
class TextArch:
    """One architecture's differences from Llama (the defaults are Llama's)."""

    name: str
    neox_rope: bool = False  # RoPE on halves (NEOX) rather than on adjacent pairs
    activation: str = "silu"  # of the gated MLP: "silu" (SwiGLU) or "gelu_tanh" (GeGLU)
    scaled_embeddings: bool = False  # embeddings multiplied by sqrt(dim)
    hf_names: tuple[str, ...] = ()  # transformers ``model_type`` values converted to this architecture

    def layer_options(self, meta: Meta, stack: LlamaConfig) -> LayerOptions:
        """Per-layer differences read from the metadata (none for Llama)."""
        return LayerOptions()

    def local_rope_base(self, meta: Meta) -> float | None:
        """RoPE base of sliding-window layers, when they have their own."""
        return None

    def layer_weights(self, tensors: Mapping[str, Any], prefix: str, stack: LlamaConfig) -> dict[str, Any]:
        """Layer ``prefix`` (``blk.{i}.``) as the Llama stack's names: norms, q/k/v (+ biases
        where the file has them), o, and the gated MLP's w1 (gate), w3 (up), w2 (down)."""
        w: dict[str, Any] = {
            "sa_norm": need_tensor(tensors, prefix + "attn_norm.weight"),
            "mlp_norm": need_tensor(tensors, prefix + "ffn_norm.weight"),
            "o": need_tensor(tensors, prefix + "attn_output.weight"),
            "w2": need_tensor(tensors, prefix + "ffn_down.weight"),
        }
        w.update(self.attention_weights(tensors, prefix, stack))
        for key in "qkv":
            if f"{prefix}attn_{key}.bias" in tensors:
                w["b" + key] = tensors[f"{prefix}attn_{key}.bias"]
        for gguf_name, key in EXTRA_NORMS.items():
            if f"{prefix}{gguf_name}.weight" in tensors:
                w[key] = tensors[f"{prefix}{gguf_name}.weight"]
        if ("q_norm" in w) != ("k_norm" in w):
            raise FormatError(f"layer {prefix!r} has only one of the q/k norms", "the GGUF file is incomplete")
        w["w1"], w["w3"] = self.mlp_weights(tensors, prefix, stack)
        return w

    def attention_weights(self, tensors: Mapping[str, Any], prefix: str, stack: LlamaConfig) -> dict[str, Any]:
        return {key: need_tensor(tensors, f"{prefix}attn_{key}.weight") for key in "qkv"}

    def mlp_weights(self, tensors: Mapping[str, Any], prefix: str, stack: LlamaConfig) -> tuple[Any, Any]:
        return need_tensor(tensors, prefix + "ffn_gate.weight"), need_tensor(tensors, prefix + "ffn_up.weight")


@dataclass(frozen=True)
class FusedArch(TextArch):
    """Architectures that store q/k/v as one ``attn_qkv`` and gate/up as one ``ffn_up`` (gate first)."""

    def attention_weights(self, tensors: Mapping[str, Any], prefix: str, stack: LlamaConfig) -> dict[str, Any]:
        if prefix + "attn_qkv.weight" not in tensors:
            return super().attention_weights(tensors, prefix, stack)
        qkv = need_tensor(tensors, prefix + "attn_qkv.weight")
        nq, nk = stack.num_heads * stack.head_dim, stack.num_kv_heads * stack.head_dim
        return {
            key: take_rows(qkv, a, b) for key, a, b in (("q", 0, nq), ("k", nq, nq + nk), ("v", nq + nk, nq + 2 * nk))
        }

    def mlp_weights(self, tensors: Mapping[str, Any], prefix: str, stack: LlamaConfig) -> tuple[Any, Any]:
        if prefix + "ffn_gate.weight" in tensors:
            return super().mlp_weights(tensors, prefix, stack)
        up, ff = need_tensor(tensors, prefix + "ffn_up.weight"), stack.intermediate_dim
        return take_rows(up, 0, ff), take_rows(up, ff, 2 * ff)


def arch_names() -> list[str]:
    """The supported architectures: the modules of this package that define ``ARCH``."""
    return sorted(
        m.name for m in pkgutil.iter_modules(_package_path()) if m.name not in _NOT_ARCHS and not m.name.startswith("_")
    )


def _package_path() -> list[str]:
    return list(importlib.import_module(__package__ or "ccsm_core.models.text").__path__)


def get_arch(name: str, where: str = "model") -> TextArch:
    """The architecture called ``name`` (its module ``ccsm_core.models.text.<name>``)."""
    names = arch_names()
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name) or name not in names:
        raise ModelError(f"{where}: architecture {name!r} is not supported", f"supported: {', '.join(names)}")
    arch = importlib.import_module(f"{__package__}.{name}").ARCH
    if not isinstance(arch, TextArch) or arch.name != name:
        raise ModelError(f"architecture module {name!r} does not define its ARCH", BUG_HINT)
    return arch
