"""Rotary position embedding and attention of `GgmlBackend` on a `GraphBuilder`.

Attention over ``float16`` buffers (text-model KV caches) is ``ggml_flash_attn_ext``, as llama.cpp
computes it; otherwise a softmax of ``k q`` products and an outer-product sum that reads V in place.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ccsm_core.errors import BUG_HINT, UsageError

from . import _ffi
from ._graph_builder import GraphBuilder
from ._persistent_memory import PersistentMemory
from ._tensor import GTensor

I32 = _ffi.I32


def rope(
    gb: GraphBuilder,
    memory: PersistentMemory,
    x: GTensor,
    positions: GTensor,
    freqs: np.ndarray,
    interleaved: bool,
    base: float | None,
) -> GTensor:
    """Rotate ``x [S, H, D]`` by ``positions``: by the angles ``pos * freqs``, or where ``base``
    is given, by the frequencies GGML derives from it (as llama.cpp does)."""
    xs = x.shape
    if len(xs) != 3 or xs[2] % 2:
        raise UsageError(f"rope: x must be [S, H, D] with even D, got {list(xs)}", BUG_HINT)
    if positions.type != I32 or positions.shape != (xs[0],):
        raise UsageError(f"rope: positions must be int [{xs[0]}], got shape {list(positions.shape)}", BUG_HINT)
    fast = isinstance(freqs, np.ndarray) and freqs.dtype == np.float32 and freqs.shape == (xs[2] // 2,)
    ff = memory.known_freq_factors(freqs.tobytes()) if fast else None  # validated when first seen
    if ff is None:
        arr = np.asarray(freqs, np.float32).reshape(-1)
        if arr.shape[0] != xs[2] // 2 or not np.all(np.isfinite(arr)) or np.any(arr < 0):
            raise UsageError(
                f"rope: need {xs[2] // 2} finite, non-negative freqs, got {arr.shape[0]}",
                "the model's RoPE settings (rope_base, rope scaling) give non-finite frequencies: fix its config",
            )
        ff = memory.freq_factors(arr)
    ctx = gb.room()
    mode = _ffi.ROPE_NORMAL if interleaved else _ffi.ROPE_NEOX
    if base is not None:  # plain RoPE: GGML derives the frequencies from the base itself
        ff, freq_base = gb.ffi.NULL, float(base)
    else:
        freq_base = 1.0
    out = gb.lib.ggml_rope_ext(
        ctx, gb.f32(x), gb.tensor(positions), ff, xs[2], mode, 0, freq_base, 1.0, 0.0, 1.0, 0.0, 0.0
    )
    return gb.new(out, xs, x.base is not None)


def attention(gb: GraphBuilder, q: GTensor, k: GTensor, v: GTensor, mask: GTensor | None, scale: float) -> GTensor:
    """``softmax(q k^T * scale + mask) v`` per head: ``q [S, H, D]``, ``k``/``v`` ``[T, KV, D]``."""
    qs, ks, vs = q.shape, k.shape, v.shape
    if len(qs) != 3 or len(ks) != 3 or len(vs) != 3 or ks[0] != vs[0] or ks[1] != vs[1] or qs[2] != ks[2]:
        raise UsageError(
            f"attention: need q [S, H, D], k/v [T, KV, D]; got {list(qs)}, {list(ks)}, {list(vs)}",
            BUG_HINT,
        )
    if qs[1] % ks[1]:
        raise UsageError(f"attention: {qs[1]} query heads are not a multiple of {ks[1]} kv heads", BUG_HINT)
    if mask is not None and mask.shape != (qs[0], ks[0]):
        raise UsageError(f"attention: mask must be [{qs[0]}, {ks[0]}], got {list(mask.shape)}", BUG_HINT)
    gb.work += qs[0] * qs[1] * ks[0] * (qs[2] + vs[2])
    lib, ctx = gb.lib, gb.room()
    if k.type == _ffi.F16 and v.type == _ffi.F16:
        # half-precision caches: GGML's fused attention, as llama.cpp computes it (q rounded
        # to f16 for the K products, an f16 accumulator for V, online softmax)
        pm = gb.ffi.NULL if mask is None else _half_mask(gb, mask)
        out = lib.ggml_flash_attn_ext(
            ctx,
            lib.ggml_permute(ctx, gb.f32(q), 0, 2, 1, 3),
            lib.ggml_permute(ctx, gb.tensor(k), 0, 2, 1, 3),
            lib.ggml_permute(ctx, gb.tensor(v), 0, 2, 1, 3),
            pm,
            float(scale),
            0.0,
            0.0,
        )
        reads = any(t is not None and t.base is not None for t in (q, k, v, mask))
        return gb.new(out, (qs[0], qs[1], vs[2]), reads)  # ggml ne (Dv, H, S): already [S, H, Dv]
    pq, pk, pv = gb.f32(q), gb.f32(k), gb.f32(v)
    pm = gb.f32(mask) if mask is not None else gb.ffi.NULL
    kq = lib.ggml_mul_mat(ctx, lib.ggml_permute(ctx, pk, 0, 2, 1, 3), lib.ggml_permute(ctx, pq, 0, 2, 1, 3))
    kq = lib.ggml_soft_max_ext(ctx, kq, pm, float(scale), 0.0)  # [T, S, H] in ggml order
    # out[d, s, h] = sum_t v[d, t, h // (H / KV)] * p[s, t, h]: an outer-product sum reads V
    # in place (a matmul would need V transposed, a strided copy of the whole window)
    pvt = lib.ggml_permute(ctx, pv, 0, 2, 1, 3)  # ne (Dv, T, KV)
    out = gb.lib.ggml_out_prod(ctx, pvt, lib.ggml_permute(ctx, kq, 1, 0, 2, 3))  # ne (Dv, S, H)
    out = lib.ggml_cont(ctx, lib.ggml_permute(ctx, out, 0, 2, 1, 3))
    reads = any(t is not None and t.base is not None for t in (q, k, v, mask))
    return gb.new(out, (qs[0], qs[1], vs[2]), reads)


def _half_mask(gb: GraphBuilder, mask: GTensor) -> Any:
    """``mask`` as float16 for fused attention, cast once per graph (every layer shares it)."""
    pm = gb.f32(mask)
    epoch = gb.epoch
    if mask.half is not None and mask.half[0] == epoch and mask.half[1] == pm:
        return mask.half[2]
    half = gb.lib.ggml_cast(gb.room(), pm, _ffi.F16)
    mask.half = (epoch, pm, half)
    return half
