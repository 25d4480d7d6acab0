"""GGML's Q4_K, written: super-blocks of 256 values in 8 sub-blocks of 32, each sub-block with a
6-bit scale and min relative to the super-block's float16 ``d`` and ``dmin``, values in 4 bits.

Block layout (144 bytes): ``d`` (f16), ``dmin`` (f16), 12 bytes of packed scales and mins, 128
bytes of quants (byte ``32 j + l`` holds value ``64 j + l`` in its low nibble and ``64 j + 32 + l``
in its high one). A value is ``d * scale * q - dmin * min``. The scales here are a direct
min/max fit per sub-block (llama.cpp searches a little further); any reader decodes them alike.
"""

from __future__ import annotations

import numpy as np

QK_K = 256
BLOCK_BYTES = 144


def _round_f16(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).astype(np.float32)


def quantize_q4_k(values: np.ndarray) -> np.ndarray:
    """Float values (last dimension a multiple of 256) -> Q4_K blocks, ``uint8`` with the last
    dimension in bytes (``cols / 256 * 144``)."""
    x = np.ascontiguousarray(values, np.float32)
    if x.ndim == 0 or x.shape[-1] % QK_K:
        raise ValueError(f"Q4_K needs rows of a multiple of {QK_K} values, got shape {x.shape}")
    blocks = x.reshape(-1, 8, 32)  # [blocks, sub-blocks, values]
    low = np.minimum(blocks.min(axis=2), 0.0)
    high = blocks.max(axis=2)
    scale = (high - low) / 15.0
    mins = -low
    d = _round_f16(scale.max(axis=1) / 63.0)
    dmin = _round_f16(mins.max(axis=1) / 63.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ls = np.where(d[:, None] > 0, np.rint(scale / d[:, None]), 0).clip(0, 63).astype(np.uint8)
        lm = np.where(dmin[:, None] > 0, np.rint(mins / dmin[:, None]), 0).clip(0, 63).astype(np.uint8)
        step = d[:, None] * ls
        offset = dmin[:, None] * lm
        q = np.where(step[:, :, None] > 0, np.rint((blocks + offset[:, :, None]) / step[:, :, None]), 0)
    q = q.clip(0, 15).astype(np.uint8).reshape(-1, 4, 2, 32)
    qs = (q[:, :, 0, :] | (q[:, :, 1, :] << 4)).reshape(-1, 128)
    sc = np.zeros((len(blocks), 12), np.uint8)
    sc[:, 0:4] = ls[:, 0:4] | ((ls[:, 4:8] >> 4) << 6)
    sc[:, 4:8] = lm[:, 0:4] | ((lm[:, 4:8] >> 4) << 6)
    sc[:, 8:12] = (ls[:, 4:8] & 0xF) | ((lm[:, 4:8] & 0xF) << 4)
    head = np.stack([d, dmin], axis=1).astype("<f2").view(np.uint8)
    out = np.concatenate([head, sc, qs], axis=1)
    return out.reshape(*x.shape[:-1], x.shape[-1] // QK_K * BLOCK_BYTES)
