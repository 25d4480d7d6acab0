"""Stored tensors -> MLX arrays: the chosen precision, GGUF block repacking and ``mx.quantize``.

Policy (what `convert` makes of one tensor):

- ``dtype`` ``None`` keeps float tensors as stored (F32, F16, BF16); ``f32``/``f16``/``bf16``
  casts every float tensor (1-D ones included, as mlx-lm does).
- GGUF ``Q8_0``, ``Q4_0`` and ``Q4_1`` matrices are repacked bit for bit into MLX's affine
  format (groups of 32; scales and biases in f32 unless a 16-bit ``dtype`` is asked for), so
  they stay quantized and dequantize exactly. Other block types are dequantized to float.
- ``bits`` (``quantize=4``/``8``) quantizes every 2-D weight whose row length is a multiple of
  the group size (else of 32) with ``mx.quantize``; a GGUF block type with no more bits is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import numpy as np

from ccsm_core.errors import UsageError

DTYPES: dict[str, Any] = {
    "f32": mx.float32,
    "float32": mx.float32,
    "f16": mx.float16,
    "float16": mx.float16,
    "half": mx.float16,
    "bf16": mx.bfloat16,
    "bfloat16": mx.bfloat16,
}
DTYPE_NAMES = {mx.float32: "f32", mx.float16: "f16", mx.bfloat16: "bf16"}
BITS = (2, 3, 4, 5, 6, 8)
GROUP_SIZES = (32, 64, 128)
REPACKABLE = {"Q8_0": 8, "Q4_0": 4, "Q4_1": 4}  # GGUF block types MLX holds exactly (bits)
_NP_TYPES = {np.dtype(np.float32): "F32", np.dtype(np.float16): "F16", np.dtype(np.float64): "F64"}
_PLAIN = ("F32", "F16", "BF16", "F64", "I8", "I16", "I32", "I64", "U8", "BOOL")


@dataclass(frozen=True)
class QWeight:
    """An affine-quantized matrix of logical shape ``[N, K]`` (``mx.quantize``'s three arrays)."""

    wq: mx.array
    scales: mx.array
    biases: mx.array
    group_size: int
    bits: int
    shape: tuple[int, int]

    def dense(self) -> mx.array:
        """The dequantized matrix, float32."""
        return mx.dequantize(self.wq, self.scales, self.biases, self.group_size, self.bits).astype(mx.float32)

    def rows(self, ids: mx.array) -> mx.array:
        """Rows ``ids`` dequantized to float32 (embedding lookup on a quantized table)."""
        return mx.dequantize(self.wq[ids], self.scales[ids], self.biases[ids], self.group_size, self.bits).astype(
            mx.float32
        )

    def arrays(self) -> dict[str, mx.array]:
        return {"wq": self.wq, "scales": self.scales, "biases": self.biases}

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays().values())


@dataclass(frozen=True)
class Precision:
    """What weights become: float ``dtype`` (``None``: as stored), optional ``bits`` and group size."""

    dtype: Any = None
    bits: int | None = None
    group_size: int = 64

    @classmethod
    def parse(cls, dtype: Any = None, quantize: Any = None, group_size: Any = 64) -> Precision:
        """Validate the backend options ``dtype``, ``quantize`` and ``group_size``."""
        if dtype in (None, "", "auto", "stored"):
            dt = None
        elif isinstance(dtype, str) and dtype.lower() in DTYPES:
            dt = DTYPES[dtype.lower()]
        else:
            raise UsageError(
                f"mlx backend: dtype {dtype!r} is not one of f32, f16, bf16",
                "pass --backend-option dtype=bf16 (or f16, f32)",
            )
        if quantize in (None, 0, False, "", "none", "0"):
            bits = None
        else:
            try:
                bits = int(quantize)
            except (TypeError, ValueError):
                bits = -1
            if bits not in BITS or isinstance(quantize, bool):
                raise UsageError(
                    f"mlx backend: quantize={quantize!r} is not a bit width MLX supports",
                    "pass --backend-option quantize=4 (or 8; also 2, 3, 5, 6)",
                )
        try:
            gs = int(group_size)
        except (TypeError, ValueError):
            gs = -1
        if gs not in GROUP_SIZES:
            raise UsageError(
                f"mlx backend: group_size={group_size!r} is not 32, 64 or 128", "pass --backend-option group_size=64"
            )
        return cls(dt, bits, gs)

    def key(self) -> str:
        """A stable text form (cache keys, messages)."""
        dt = "stored" if self.dtype is None else DTYPE_NAMES[self.dtype]
        return f"{dt}-q{self.bits}g{self.group_size}" if self.bits else dt


def _group(k: int, preferred: int) -> int | None:
    for g in (preferred, 32):
        if k % g == 0:
            return g
    return None


def source_info(t: Any) -> tuple[str, tuple[int, ...], np.ndarray]:
    """``(stored type, logical shape, raw storage)`` of a `TensorData` or an ndarray."""
    if hasattr(t, "dtype") and isinstance(t.dtype, str):
        return t.dtype, tuple(int(d) for d in t.shape), np.asarray(t.data)
    a = np.asarray(t)
    return _NP_TYPES.get(a.dtype, a.dtype.name.upper()), tuple(a.shape), a


def needs_work(t: Any, prec: Precision) -> bool:
    """True when converting ``t`` costs more than copying it (``mx.quantize`` or block dequantizing).

    Only such conversions are worth a disk cache: hashing the source runs at about the speed
    of a plain cast (see the README's figures)."""
    stored, shape, _ = source_info(t)
    if stored in REPACKABLE and len(shape) == 2 and (prec.bits is None or REPACKABLE[stored] <= prec.bits):
        return False
    if stored not in _PLAIN:
        return True  # a block type to dequantize
    return prec.bits is not None and len(shape) == 2 and _group(shape[-1], prec.group_size) is not None


def dense(t: Any, dtype: Any = None) -> mx.array:
    """``t`` as a float MLX array: stored float types kept unless ``dtype`` says otherwise."""
    stored, shape, raw = source_info(t)
    if stored == "BF16":
        a = mx.array(np.ascontiguousarray(raw).view(np.uint16).reshape(shape)).view(mx.bfloat16)
    elif stored in ("F32", "F16") and raw.dtype == (np.float32 if stored == "F32" else np.float16):
        a = mx.array(np.ascontiguousarray(raw).reshape(shape))
    elif hasattr(t, "numpy"):
        a = mx.array(np.ascontiguousarray(t.numpy(), np.float32))
    else:
        a = mx.array(np.ascontiguousarray(raw, np.float32))
    return a if dtype is None or a.dtype == dtype else a.astype(dtype)


def repack_gguf(stored: str, shape: tuple[int, ...], raw: np.ndarray, scale_dtype: Any) -> QWeight:
    """GGUF Q8_0 / Q4_0 / Q4_1 blocks -> MLX affine groups of 32, the same values exactly."""
    n, k = shape
    blocks = np.ascontiguousarray(raw, np.uint8).reshape(n, k // 32, -1)
    d = blocks[..., 0:2].copy().view(np.float16)[..., 0].astype(np.float32)  # [n, k/32]
    if stored == "Q8_0":
        q = (blocks[..., 2:34].view(np.int8).astype(np.int16) + 128).astype(np.uint8)  # [n, k/32, 32]
        bits, bias = 8, -128.0 * d
        packed = q.reshape(n, -1)
    else:
        off = 2 if stored == "Q4_0" else 4
        nib = blocks[..., off : off + 16]
        q = np.concatenate([nib & 0x0F, nib >> 4], axis=-1)  # element j, then j + 16 (GGML order)
        bits = 4
        bias = -8.0 * d if stored == "Q4_0" else blocks[..., 2:4].copy().view(np.float16)[..., 0].astype(np.float32)
        packed = (q[..., 0::2] | (q[..., 1::2] << 4)).astype(np.uint8).reshape(n, -1)  # MLX: low nibble first
    wq = mx.array(np.ascontiguousarray(packed).view(np.uint32))
    sd = mx.float32 if scale_dtype is None else scale_dtype
    return QWeight(wq, mx.array(d).astype(sd), mx.array(np.asarray(bias, np.float32)).astype(sd), 32, bits, (n, k))


def quantize(a: mx.array, bits: int, group_size: int) -> QWeight | None:
    """``mx.quantize`` of a 2-D float matrix, or ``None`` when its rows fit no group size."""
    if a.ndim != 2:
        return None
    g = _group(a.shape[1], group_size)
    if g is None:
        return None
    wq, scales, biases = mx.quantize(a, g, bits)
    return QWeight(wq, scales, biases, g, bits, (int(a.shape[0]), int(a.shape[1])))


def convert(t: Any, prec: Precision) -> mx.array | QWeight:
    """One stored tensor -> what the backend computes with (see the module docstring)."""
    stored, shape, raw = source_info(t)
    if stored in REPACKABLE and len(shape) == 2 and (prec.bits is None or REPACKABLE[stored] <= prec.bits):
        return repack_gguf(stored, shape, raw, None if prec.dtype is None or prec.dtype == mx.float32 else prec.dtype)
    a = dense(t, prec.dtype)  # block types dequantize to float32
    if prec.bits is not None and a.ndim == 2:
        q = quantize(a, prec.bits, prec.group_size)
        if q is not None:
            return q
    return a
