"""Model configurations: the torchtune Llama flavours CSM names, and CSM's own arguments.

Every configuration read from a file passes `check_llama` / `check_csm` (types, ranges and the
heads dividing the dimensions) before anything is sized or computed from it, whichever layout
it came from (the original ``config.json``, a CSM GGUF's ``csm.config``, transformers').
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from .. import schema
from ..errors import FormatError, ModelError

MAX_LAYERS = 1024  # layers of one stack
MAX_HEADS = 1 << 12
MAX_DIM = 1 << 20  # a width (embedding, feed-forward, head)
MAX_SEQ_LEN = 1 << 16  # positions of a context (CSM's is 2048); the cache it sizes is checked against the budget
MAX_ROPE_LEN = 1 << 24  # the original context length RoPE scaling refers to
MAX_VOCAB = 1 << 24
ACTIVATIONS = ("silu", "gelu_tanh")


@dataclass(frozen=True)
class LlamaConfig:
    """A Llama-3.2-style decoder stack (torchtune ``llama3_2`` argument names)."""

    num_layers: int
    num_heads: int
    num_kv_heads: int
    embed_dim: int
    intermediate_dim: int
    max_seq_len: int = 2048
    norm_eps: float = 1e-5
    rope_base: float = 500_000.0
    scale_factor: float | None = 32.0  # Llama-3 RoPE scaling; None = plain RoPE
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    old_context_len: int = 8192
    rope_interleaved: bool = True  # original checkpoints; False for HF-permuted q/k
    head_size: int | None = None  # when not embed_dim / num_heads (Gemma)
    activation: str = "silu"  # gated FFN activation: "silu" (SwiGLU) or "gelu_tanh" (GeGLU)

    @property
    def head_dim(self) -> int:
        return self.head_size or self.embed_dim // self.num_heads

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config") -> LlamaConfig:
        """A flavour from a JSON object of torchtune names, every value checked (`check_llama`)."""
        d = schema.mapping(d, "the flavour", where)
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(
                f"{where}: unknown flavour keys {[k[:40] for k in unknown[:8]]}",
                f"use torchtune llama3_2 names: {', '.join(sorted(known))}",
            )
        missing = [k for k in TORCHTUNE_KEYS[:5] if k not in d]
        if missing:
            raise ModelError(f"{where}: incomplete flavour (no {', '.join(missing)})", "give every dimension")
        return check_llama(cls(**d), where)

    def rope_freqs(self) -> np.ndarray:
        """Per-pair angular frequencies, with Llama-3 scaling as torchtune's Llama3ScaledRoPE."""
        d = self.head_dim
        freqs = 1.0 / (np.float32(self.rope_base) ** (np.arange(0, d, 2, dtype=np.float32)[: d // 2] / d))
        freqs = freqs.astype(np.float32)
        if self.scale_factor is None:
            return freqs
        low_wavelen = self.old_context_len / self.low_freq_factor
        high_wavelen = self.old_context_len / self.high_freq_factor
        out = np.empty_like(freqs)
        for i, f in enumerate(freqs):
            wavelen = 2 * np.pi / f
            if wavelen < high_wavelen:
                out[i] = f
            elif wavelen > low_wavelen:
                out[i] = f / self.scale_factor
            else:
                smooth = (self.old_context_len / wavelen - self.low_freq_factor) / (
                    self.high_freq_factor - self.low_freq_factor
                )
                out[i] = (1 - smooth) * f / self.scale_factor + smooth * f
        return out.astype(np.float32)


def check_llama(cfg: LlamaConfig, where: str) -> LlamaConfig:
    """``cfg`` if every field has its type and range and the heads divide the dimensions, else a
    one-line `FormatError` naming the field (nothing unchecked reaches a cache or C code)."""
    hint = "restore the model's configuration"
    for name, high in (
        ("num_layers", MAX_LAYERS),
        ("num_heads", MAX_HEADS),
        ("num_kv_heads", MAX_HEADS),
        ("embed_dim", MAX_DIM),
        ("intermediate_dim", MAX_DIM),
        ("max_seq_len", MAX_SEQ_LEN),
        ("old_context_len", MAX_ROPE_LEN),
    ):
        schema.count(getattr(cfg, name), name, where, high=high, hint=hint)
    if cfg.head_size is not None:
        schema.count(cfg.head_size, "head_size", where, high=MAX_DIM, hint=hint)
    schema.positive(cfg.norm_eps, "norm_eps", where, high=1.0, hint=hint)
    schema.real(cfg.rope_base, "rope_base", where, low=1.0, high=1e30, hint=hint)  # below 1: infinite frequencies
    if cfg.scale_factor is not None:
        schema.real(cfg.scale_factor, "scale_factor", where, low=1.0, high=1e6, hint=hint)  # a context extension
        low_f = schema.positive(cfg.low_freq_factor, "low_freq_factor", where, hint=hint)
        high_f = schema.positive(cfg.high_freq_factor, "high_freq_factor", where, hint=hint)
        if not low_f < high_f:
            raise FormatError(f"{where}: low_freq_factor {low_f:g} is not below high_freq_factor {high_f:g}", hint)
    if not isinstance(cfg.rope_interleaved, bool):
        raise FormatError(f"{where}: rope_interleaved = {cfg.rope_interleaved!r} is not true or false", hint)
    if cfg.activation not in ACTIVATIONS:
        raise FormatError(f"{where}: activation {str(cfg.activation)[:40]!r} is not one of {ACTIVATIONS}", hint)
    schema.divides(cfg.num_kv_heads, cfg.num_heads, "kv heads into heads", where, hint=hint)
    if cfg.head_size is None:
        schema.divides(cfg.num_heads, cfg.embed_dim, "heads into embed_dim", where, hint=hint)
    if cfg.head_dim % 2:
        raise FormatError(f"{where}: head dimension {cfg.head_dim} is odd (RoPE rotates pairs)", hint)
    return cfg


TORCHTUNE_KEYS = (
    "num_layers",
    "num_heads",
    "num_kv_heads",
    "embed_dim",
    "intermediate_dim",
    "max_seq_len",
    "norm_eps",
    "rope_base",
    "scale_factor",
)

FLAVORS: dict[str, LlamaConfig] = {
    "llama-1B": LlamaConfig(num_layers=16, num_heads=32, num_kv_heads=8, embed_dim=2048, intermediate_dim=8192),
    "llama-100M": LlamaConfig(num_layers=4, num_heads=8, num_kv_heads=2, embed_dim=1024, intermediate_dim=8192),
}

DECODER_CACHE = 32  # the original decoder's KV cache length: one frame of 32 codebooks


@dataclass(frozen=True)
class CsmConfig:
    """CSM's ``ModelArgs`` with the two flavours resolved."""

    backbone: LlamaConfig
    decoder: LlamaConfig
    text_vocab_size: int = 128_256
    audio_vocab_size: int = 2051
    audio_num_codebooks: int = 32
    backbone_flavor: str = "llama-1B"
    decoder_flavor: str = "llama-100M"

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], where: str = "config.json") -> CsmConfig:
        """Read the original ``config.json`` (plus an optional ``flavors`` map), every value checked."""
        d = schema.mapping(d, "the configuration", where)
        custom = schema.mapping(d.get("flavors") or {}, "flavors", where)

        def flavor(key: str, default: str) -> tuple[str, LlamaConfig]:
            name = schema.text(d.get(key, default), key, where, max_len=256)
            if name in custom:
                return name, LlamaConfig.from_dict(custom[name], f"{where}: flavour {name!r}")
            if name in FLAVORS:
                return name, FLAVORS[name]
            raise ModelError(
                f"{where}: unknown {key} {name!r}", f"known: {', '.join(FLAVORS)}; or describe it in a 'flavors' map"
            )

        bname, backbone = flavor("backbone_flavor", "llama-1B")
        dname, decoder = flavor("decoder_flavor", "llama-100M")
        return check_csm(
            cls(
                backbone=backbone,
                decoder=decoder,
                text_vocab_size=d.get("text_vocab_size", 128_256),
                audio_vocab_size=d.get("audio_vocab_size", 2051),
                audio_num_codebooks=d.get("audio_num_codebooks", 32),
                backbone_flavor=bname,
                decoder_flavor=dname,
            ),
            where,
        )

    def as_dict(self) -> dict[str, Any]:
        flav: dict[str, Any] = {}
        defaults = LlamaConfig(1, 1, 1, 1, 1)
        for name, cfg in ((self.backbone_flavor, self.backbone), (self.decoder_flavor, self.decoder)):
            if name not in FLAVORS or FLAVORS[name] != cfg:
                flav[name] = {
                    f.name: getattr(cfg, f.name)
                    for f in fields(cfg)
                    if f.name in TORCHTUNE_KEYS or getattr(cfg, f.name) != getattr(defaults, f.name)
                }
        out: dict[str, Any] = {
            "backbone_flavor": self.backbone_flavor,
            "decoder_flavor": self.decoder_flavor,
            "text_vocab_size": self.text_vocab_size,
            "audio_vocab_size": self.audio_vocab_size,
            "audio_num_codebooks": self.audio_num_codebooks,
        }
        if flav:
            out["flavors"] = flav
        return out


def check_csm(cfg: CsmConfig, where: str) -> CsmConfig:
    """``cfg`` if both stacks pass `check_llama` and the vocabularies and codebooks are in range."""
    hint = "restore the model's configuration"
    check_llama(cfg.backbone, f"{where}: backbone")
    check_llama(cfg.decoder, f"{where}: decoder")
    schema.count(cfg.text_vocab_size, "text_vocab_size", where, high=MAX_VOCAB, hint=hint)
    schema.count(cfg.audio_vocab_size, "audio_vocab_size", where, low=2, high=MAX_VOCAB, hint=hint)
    # the decoder's cache holds one frame of DECODER_CACHE codebooks
    schema.count(cfg.audio_num_codebooks, "audio_num_codebooks", where, high=DECODER_CACHE, hint=hint)
    return cfg
