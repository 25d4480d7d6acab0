"""RoPE scaling as llama.cpp computes it: linear, YaRN and LongRoPE, read from GGUF metadata.

Every kind changes two things, both fixed for a model: the angular frequency of each dimension
pair (angles stay ``pos * freq``), and a magnitude ``mscale`` llama.cpp multiplies the rotated
queries and keys by (so attention logits by ``mscale**2``).

- frequencies (ggml's ``rope_yarn``): ``freq_i = base**(-2i/n) / ff_i``, with ``ff_i`` the
  per-pair factors of a ``rope_freqs`` or ``rope_factors_long/short`` tensor (1 without); then
  ``freq_i * fs`` with ``fs = 1/factor``, or with YaRN's ``ext_factor != 0``
  ``freq_i * (fs * (1 - mix_i) + mix_i)``, ``mix_i = ramp_i * ext_factor``, the ramp falling
  from 1 to 0 over the pairs between ``ggml_rope_yarn_corr_dims``' low and high dimensions;
- magnitude (llama_context's ``yarn_attn_factor`` times the kernel's own YaRN factor):
  ``rope.scaling.attn_factor`` (LongRoPE's ``sqrt(1 + ln(s)/ln(n_orig))``), times for YaRN
  ``get_mscale(factor, 1) / get_mscale(factor, yarn_log_multiplier)`` where the file gives a log
  multiplier, else ``get_mscale(factor, 1) = 1 + 0.1 ln(factor)``.

llama.cpp reads the GGUF's YaRN betas and extrapolation factor for none of ccsm's architectures
(it runs 32, 1 and 1 whatever the file says) and the log multiplier for ``mistral3`` only:
`RopeScaling.from_metadata` reads what llama.cpp (b11312) reads, so a file computes what it
computes there.

LongRoPE (Phi-3) keeps two factor sets; llama.cpp takes the long one when its context (padded
to 256) exceeds ``rope.scaling.original_context_length``, the short one otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import schema
from ..errors import FormatError

KINDS = ("none", "linear", "yarn", "longrope")
CONTEXT_PAD = 256  # llama.cpp pads its context to this many positions
_HINT = "the GGUF file is broken; convert the model again"
LOG_MULTIPLIER_ARCHS = ("mistral3",)  # architectures whose yarn_log_multiplier llama.cpp reads
YARN_PARAMETER_ARCHS: tuple[str, ...] = ()  # ... and whose yarn_beta_fast/slow and yarn_ext_factor


def yarn_corr_dims(
    n_dims: int, n_ctx_orig: int, base: float, beta_fast: float, beta_slow: float
) -> tuple[float, float]:
    """ggml's ``ggml_rope_yarn_corr_dims``: the dimensions where YaRN's ramp starts and ends."""

    def corr_dim(n_rot: float) -> float:
        return n_dims * math.log(n_ctx_orig / (n_rot * 2 * math.pi)) / (2 * math.log(base))

    return max(0.0, math.floor(corr_dim(beta_fast))), min(n_dims - 1.0, math.ceil(corr_dim(beta_slow)))


def get_mscale(scale: float, mscale: float) -> float:
    """YaRN's magnitude for a context ``scale`` times the original (transformers' and llama.cpp's)."""
    return 1.0 if scale <= 1.0 else 0.1 * mscale * math.log(scale) + 1.0


@dataclass(frozen=True)
class RopeScaling:
    """A model's RoPE scaling (``kind`` none: plain RoPE, all else at its neutral value)."""

    kind: str = "none"
    factor: float = 1.0  # context extension: frequencies scaled by 1/factor
    original_context: int = 0  # the context trained before the extension (0: the model's own)
    beta_fast: float = 32.0  # YaRN: rotations that bound the ramp
    beta_slow: float = 1.0
    ext_factor: float = 0.0  # YaRN's extrapolation mix (1 for YaRN unless the file says)
    attn_factor: float = 1.0  # rope.scaling.attn_factor: magnitude of the rotated q/k
    log_multiplier: float = 0.0  # YaRN: rope.scaling.yarn_log_multiplier (transformers' mscale_all_dim)

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], arch: str, where: str) -> RopeScaling:
        """The scaling llama.cpp reads from ``{arch}.rope.*`` (type, factor, original context,
        the attention factor; YaRN's betas, extrapolation factor and log multiplier where
        llama.cpp reads them for ``arch``)."""

        def value(key: str, default: Any, read: bool = True) -> Any:
            v = md.get(f"{arch}.rope.{key}", default) if read else default
            return v.item() if isinstance(v, np.generic) else v

        yarn_keys = arch in YARN_PARAMETER_ARCHS

        name = lambda key: f"metadata {arch}.rope.{key}"  # noqa: E731
        kind = value("scaling.type", None)
        if kind is not None and kind not in KINDS:
            raise FormatError(
                f"{where}: RoPE scaling {kind!r} is not supported", f"supported: {', '.join(KINDS)} (and rope_freqs)"
            )
        factor = value("scaling.factor", value("scale_linear", 0.0))
        factor = 0.0 if factor == 0 else schema.positive(factor, name("scaling.factor"), where, high=1e6, hint=_HINT)
        if kind == "none":
            factor = 0.0  # llama.cpp never scales with type none
        yarn = kind == "yarn"
        ext = value("scaling.yarn_ext_factor", -1.0, yarn_keys)
        ext = schema.real(ext, name("scaling.yarn_ext_factor"), where, low=-1.0, high=1.0, hint=_HINT)
        return cls(
            kind=kind or ("linear" if factor not in (0.0, 1.0) else "none"),
            factor=factor or 1.0,
            original_context=schema.count(
                value("scaling.original_context_length", 0), name("scaling.original_context_length"), where, low=0
            ),
            beta_fast=schema.positive(
                value("scaling.yarn_beta_fast", 32.0, yarn_keys), name("scaling.yarn_beta_fast"), where
            ),
            beta_slow=schema.positive(
                value("scaling.yarn_beta_slow", 1.0, yarn_keys), name("scaling.yarn_beta_slow"), where
            ),
            ext_factor=(1.0 if yarn else 0.0) if ext < 0 else ext,
            attn_factor=schema.positive(value("scaling.attn_factor", 1.0), name("scaling.attn_factor"), where),
            log_multiplier=schema.real(
                value("scaling.yarn_log_multiplier", 0.0, arch in LOG_MULTIPLIER_ARCHS),
                name("scaling.yarn_log_multiplier"),
                where,
                low=0.0,
                high=1e3,
                hint=_HINT,
            ),
        )

    @property
    def changes_frequencies(self) -> bool:
        return self.factor != 1.0 or self.ext_factor != 0.0

    def frequencies(
        self, freqs: np.ndarray, base: float, n_ctx_train: int, factors: np.ndarray | None = None
    ) -> np.ndarray:
        """Per-pair frequencies from the plain ones ``freqs`` (``base**(-2i/n)``) divided by the
        per-pair ``factors``, scaled as llama.cpp's kernel scales its angles."""
        out = np.asarray(freqs, np.float64)
        if factors is not None:
            out = out / np.asarray(factors, np.float64)
        fs = np.float64(np.float32(1.0) / np.float32(self.factor))
        if self.ext_factor == 0.0:
            return (out * fs).astype(np.float32)
        n_dims = 2 * len(out)
        if not base > 1.0:
            raise FormatError(f"YaRN over a RoPE base of {base:g} is not defined", _HINT)
        low, high = yarn_corr_dims(n_dims, self.original_context or n_ctx_train, base, self.beta_fast, self.beta_slow)
        y = (np.arange(len(out)) - low) / max(0.001, high - low)
        mix = (1.0 - np.clip(y, 0.0, 1.0)) * self.ext_factor
        return (out * fs * (1.0 - mix) + out * mix).astype(np.float32)

    def magnitude(self) -> float:
        """What llama.cpp multiplies rotated queries and keys by."""
        attn = 1.0
        if self.ext_factor != 0.0:
            factor = 1.0 / float(np.float32(1.0) / np.float32(self.factor))
            if self.log_multiplier != 0.0:
                attn = get_mscale(factor, 1.0) / get_mscale(factor, self.log_multiplier)
            else:
                attn = get_mscale(factor, 1.0)
            # (llama_context divides this by the kernel's own 1 + 0.1 ln(factor), which ggml's
            # rope_yarn multiplies back: the net magnitude is this)
        return attn * self.attn_factor

    def use_long(self, context: int, n_ctx_train: int) -> bool:
        """LongRoPE: whether a context of ``context`` positions takes the long factors."""
        padded = -(-context // CONTEXT_PAD) * CONTEXT_PAD
        return padded > (self.original_context or n_ctx_train)
