"""Model configurations: the torchtune Llama flavours CSM names, and CSM's own arguments."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np

from ..errors import ModelError


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
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ModelError(
                f"{where}: unknown flavour keys {unknown}", f"use torchtune llama3_2 names: {', '.join(sorted(known))}"
            )
        try:
            cfg = cls(**d)
        except TypeError as e:
            raise ModelError(f"{where}: incomplete flavour ({e})", "give every dimension") from None
        if (cfg.head_size is None and cfg.embed_dim % cfg.num_heads) or cfg.num_heads % cfg.num_kv_heads:
            raise ModelError(
                f"{where}: heads do not divide the dimensions "
                f"(dim {cfg.embed_dim}, heads {cfg.num_heads}, kv heads {cfg.num_kv_heads})"
            )
        return cfg

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
        """Read the original ``config.json`` (plus an optional ``flavors`` map)."""
        custom = d.get("flavors") or {}

        def flavor(key: str, default: str) -> tuple[str, LlamaConfig]:
            name = d.get(key, default)
            if name in custom:
                return name, LlamaConfig.from_dict(custom[name], f"{where}: flavour {name!r}")
            if name in FLAVORS:
                return name, FLAVORS[name]
            raise ModelError(
                f"{where}: unknown {key} {name!r}", f"known: {', '.join(FLAVORS)}; or describe it in a 'flavors' map"
            )

        bname, backbone = flavor("backbone_flavor", "llama-1B")
        dname, decoder = flavor("decoder_flavor", "llama-100M")
        try:
            return cls(
                backbone=backbone,
                decoder=decoder,
                text_vocab_size=int(d.get("text_vocab_size", 128_256)),
                audio_vocab_size=int(d.get("audio_vocab_size", 2051)),
                audio_num_codebooks=int(d.get("audio_num_codebooks", 32)),
                backbone_flavor=bname,
                decoder_flavor=dname,
            )
        except (TypeError, ValueError) as e:
            raise ModelError(f"{where}: bad value ({e})") from None

    def as_dict(self) -> dict[str, Any]:
        flav = {}
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
