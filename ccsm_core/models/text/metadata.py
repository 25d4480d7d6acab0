"""The schema of a GGUF text model's metadata and tensor shapes, checked before anything is built.

Every value read from a file passes a typed check of `ccsm_core.schema` (counts are integers in
range, epsilons and RoPE bases finite and > 0), then the cross-field rules: KV heads divide the
heads, heads of an even size fill the width (or ``attention.key_length`` gives the size), and
every tensor of every layer has exactly the shape the metadata implies, so the dimensions can
never ask for more than the file holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from ... import schema
from ...errors import FormatError
from ...tensors import float32_values
from ..config import LlamaConfig
from .arch import EXTRA_NORMS, FusedArch, TextArch, need_tensor

MAX_HEADS = 1 << 16
MAX_LAYERS = 1 << 12
MAX_WIDTH = 1 << 20  # embedding width, head size, feed-forward width
MAX_CONTEXT = 1 << 31
MAX_VOCAB = 1 << 24
MAX_ROPE_BASE = 1e30
ROPE_FACTORS = ("rope_freqs.weight", "rope_factors_long.weight", "rope_factors_short.weight")
_HINT = "the GGUF file is broken; convert the model again"
_MISSING = object()


def plain(value: Any) -> Any:
    """NumPy scalars as the Python values the typed checks expect."""
    return value.item() if isinstance(value, np.generic) else value


class ArchMetadata:
    """One architecture's metadata keys (``{arch}.key``), read through typed checks."""

    def __init__(self, md: Mapping[str, Any], arch: str, where: str) -> None:
        self.md, self.arch, self.where = md, arch, where

    def raw(self, key: str, default: Any = _MISSING) -> Any:
        value = plain(self.md.get(f"{self.arch}.{key}", default))
        if value is _MISSING:
            raise FormatError(f"{self.where}: metadata {self.arch}.{key} is missing", "the GGUF file is incomplete")
        return value

    def count(self, key: str, default: Any = _MISSING, *, low: int = 1, high: int = MAX_WIDTH) -> int:
        return schema.count(
            self.raw(key, default), f"metadata {self.arch}.{key}", self.where, low=low, high=high, hint=_HINT
        )

    def positive(self, key: str, default: Any = _MISSING, *, high: float = 1e30) -> float:
        return schema.positive(self.raw(key, default), f"metadata {self.arch}.{key}", self.where, high=high, hint=_HINT)

    def rope_base(self, key: str, default: Any = _MISSING) -> float:
        """A RoPE frequency base: >= 1, so that every frequency is finite (real ones are 1e4..1e7)."""
        name = f"metadata {self.arch}.{key}"
        return schema.real(self.raw(key, default), name, self.where, low=1.0, high=MAX_ROPE_BASE, hint=_HINT)


def stack_config(md: Mapping[str, Any], arch: TextArch, where: str) -> LlamaConfig:
    """The transformer stack's shape from the metadata, every value and rule checked."""
    m = ArchMetadata(md, arch.name, where)
    heads = m.count("attention.head_count", high=MAX_HEADS)
    dim = m.count("embedding_length")
    kv_heads = m.count("attention.head_count_kv", heads, high=heads)
    schema.divides(kv_heads, heads, "KV heads into attention heads", where, hint=_HINT)
    if f"{arch.name}.attention.key_length" in md:
        head_size = m.count("attention.key_length", high=MAX_WIDTH)
    else:
        schema.divides(heads, dim, "attention heads into the embedding width", where, hint=_HINT)
        head_size = dim // heads
    value_size = m.count("attention.value_length", head_size)
    if head_size % 2 or value_size != head_size:
        raise FormatError(
            f"{where}: heads of key size {head_size} and value size {value_size} are not supported",
            "RoPE needs an even head size equal for keys and values; the GGUF file is broken",
        )
    rope_dims = m.count("rope.dimension_count", head_size, high=MAX_WIDTH)
    if rope_dims != head_size:
        raise FormatError(
            f"{where}: RoPE over {rope_dims} of {head_size} head dimensions (partial RoPE) is not supported",
            "only whole-head RoPE; the model needs another runtime",
        )
    return LlamaConfig(
        num_layers=m.count("block_count", high=MAX_LAYERS),
        num_heads=heads,
        num_kv_heads=kv_heads,
        embed_dim=dim,
        intermediate_dim=m.count("feed_forward_length"),
        max_seq_len=m.count("context_length", 4096, high=MAX_CONTEXT),
        norm_eps=m.positive("attention.layer_norm_rms_epsilon", 1e-5, high=1.0),
        rope_base=m.rope_base("rope.freq_base", 10000.0),
        scale_factor=None,
        rope_interleaved=not arch.neox_rope,
        head_size=head_size if head_size * heads != dim else None,
        activation=arch.activation,
    )


def check_vocab(md: Mapping[str, Any], arch: str, vocab_size: int, where: str) -> None:
    """The tokenizer's vocabulary is within bounds and agrees with ``{arch}.vocab_size`` if given."""
    schema.count(vocab_size, "the vocabulary size", where, high=MAX_VOCAB, hint=_HINT)
    given = plain(md.get(f"{arch}.vocab_size"))
    if given is not None and schema.count(given, f"metadata {arch}.vocab_size", where, high=MAX_VOCAB) != vocab_size:
        raise FormatError(
            f"{where}: metadata {arch}.vocab_size = {given} but the tokenizer has {vocab_size} tokens", _HINT
        )


def expected_layer_shapes(stack: LlamaConfig) -> dict[str, tuple[int, ...]]:
    """A layer's weights (the names `TextArch.layer_weights` gives) -> NumPy shape."""
    d, hd, ff = stack.embed_dim, stack.head_dim, stack.intermediate_dim
    nq, nk = stack.num_heads * hd, stack.num_kv_heads * hd
    shapes: dict[str, tuple[int, ...]] = {
        "sa_norm": (d,),
        "mlp_norm": (d,),
        "q": (nq, d),
        "k": (nk, d),
        "v": (nk, d),
        "bq": (nq,),
        "bk": (nk,),
        "bv": (nk,),
        "o": (d, nq),
        "w1": (ff, d),
        "w3": (ff, d),
        "w2": (d, ff),
    }
    shapes.update({key: (hd,) if key in ("q_norm", "k_norm") else (d,) for key in EXTRA_NORMS.values()})
    return shapes


def check_tensor_shapes(
    tensors: Mapping[str, Any], arch: TextArch, stack: LlamaConfig, vocab_size: int, where: str
) -> None:
    """Every tensor the model uses has the shape the metadata implies (before anything is built)."""

    def check(name: str, got: Any, want: tuple[int, ...]) -> None:
        shape = tuple(int(x) for x in got.shape)
        if shape != want:
            raise FormatError(
                f"{where}: tensor {name!r} has shape {list(shape)}, expected {list(want)}",
                "the metadata does not match the weights; the GGUF file is broken",
            )

    d = stack.embed_dim
    check("token_embd.weight", need_tensor(tensors, "token_embd.weight"), (vocab_size, d))
    if "output.weight" in tensors:
        check("output.weight", tensors["output.weight"], (vocab_size, d))
    check("output_norm.weight", need_tensor(tensors, "output_norm.weight"), (d,))
    for name in ROPE_FACTORS:
        if name in tensors:
            check_rope_factors(name, tensors[name], stack.head_dim, where)
    want = expected_layer_shapes(stack)
    fused = isinstance(arch, FusedArch)
    for i in range(stack.num_layers):
        prefix = f"blk.{i}."
        if fused:  # check the stored fused tensors before they are split
            d_qkv = (stack.num_heads + 2 * stack.num_kv_heads) * stack.head_dim
            if prefix + "attn_qkv.weight" in tensors:
                check(prefix + "attn_qkv.weight", tensors[prefix + "attn_qkv.weight"], (d_qkv, d))
            if prefix + "ffn_gate.weight" not in tensors and prefix + "ffn_up.weight" in tensors:
                check(prefix + "ffn_up.weight", tensors[prefix + "ffn_up.weight"], (2 * stack.intermediate_dim, d))
        for key, t in arch.layer_weights(tensors, prefix, stack).items():
            check(str(getattr(t, "name", prefix + key)), t, want[key])


def check_rope_factors(name: str, tensor: Any, head_dim: int, where: str) -> None:
    """Per-pair RoPE divisors: ``head_dim / 2`` finite values in [1e-4, 1e4] (frequencies stay finite)."""
    values = float32_values(tensor).reshape(-1)
    if values.shape != (head_dim // 2,) or not np.all((values >= 1e-4) & (values <= 1e4)):
        raise FormatError(
            f"{where}: tensor {name!r} holds {values.size} RoPE factors, expected {head_dim // 2} in [1e-4, 1e4]",
            _HINT,
        )
