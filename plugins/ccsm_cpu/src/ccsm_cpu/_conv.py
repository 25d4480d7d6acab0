"""1-D convolution and transposed convolution of `GgmlBackend` on a `GraphBuilder`.

GGML's float32 kernels are dot products (``mul_mat``) and row updates (``out_prod``); which one
is fast depends on the shapes, so ``conv1d`` picks per call:

- long outputs (a multiple of 64 steps) with few input channels: one ``out_prod`` per tap over
  shifted views of the input (no im2col copy; the product runs along time, which is contiguous);
- a few output steps: im2col and one matmul with the weight as the streamed operand (these
  layers are bound by reading the weight);
- otherwise im2col + one batched matmul (groups are the batch axis).

``conv_transpose1d`` with ``groups == 1`` is one matmul of every tap against a cached weight
laid out so that each shift of the overlap-add is a block of whole rows; depthwise-style groups
multiply by broadcasting; other group counts run ggml's kernel per group. Biases of weights are
added as a cached ``[Cout, Tout]`` block where that is small (ggml's broadcast along the
contiguous axis runs per element).

``conv1d_batch`` / ``conv_transpose1d_batch`` take ``x [B, Cin, T]`` (B streams) and give each
stream exactly its `conv1d` / `conv_transpose1d` result: the products whose kernel does not
depend on how many streams share them run once for all (the weight is read once); the others
(``out_prod`` taps, groups) run per stream in the same graph.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ccsm_core.errors import BUG_HINT, UsageError

from . import _ffi, _shape_ops
from ._graph_builder import GraphBuilder
from ._persistent_memory import PersistentMemory
from ._tensor import WEIGHT, GTensor

F32 = _ffi.F32
OUTPROD_MAX_CIN = 64  # conv1d by out_prod when input channels <= this and Tout % OUTPROD_STEP == 0
OUTPROD_STEP = 64  # ggml's vec_mad runs whole SIMD steps of 64 floats; the rest is scalar
SMALL_T = 4  # conv1d with at most this many outputs streams the weight as matmul's first operand
BIAS_MAX_T = 4096  # longest output that gets a cached [Cout, Tout] bias block
BIAS_BUDGET = 64 << 20  # bytes of such blocks per backend (one per layer and length)


def _positive(what: str, **values: Any) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UsageError(f"{what}: {name} must be a positive int, got {v!r}", BUG_HINT)


def _bias(
    gb: GraphBuilder,
    memory: PersistentMemory,
    ctx: Any,
    out: Any,
    b: GTensor | None,
    cout: int,
    what: str,
    tout: int | None = None,
) -> Any:
    if b is None:
        return out
    if b.shape != (cout,):
        raise UsageError(f"{what}: bias shape {list(b.shape)} does not match {cout} output channels", BUG_HINT)
    lib = gb.lib
    if tout is not None and b.kind == WEIGHT and tout <= BIAS_MAX_T:
        block = memory.derived_within(
            gb.tensor(b),
            ("bias", tout),
            4 * cout * tout,
            BIAS_BUDGET,
            lambda host: np.repeat(host.reshape(cout, 1), tout, 1),
        )
        if block is not None:
            return lib.ggml_add(ctx, out, block)
    return lib.ggml_add(ctx, out, lib.ggml_reshape_4d(ctx, gb.f32(b), 1, cout, 1, 1))


def _reads(*ts: GTensor | None) -> bool:
    return any(t is not None and t.base is not None for t in ts)


def conv1d(
    gb: GraphBuilder,
    memory: PersistentMemory,
    x: GTensor,
    w: GTensor,
    b: GTensor | None,
    stride: int,
    dilation: int,
    groups: int,
) -> GTensor:
    """``x [Cin, T]``, ``w [Cout, Cin/groups, K]`` -> ``[Cout, Tout]`` (no padding)."""
    _positive("conv1d", stride=stride, dilation=dilation, groups=groups)
    if len(x.shape) != 2 or len(w.shape) != 3:
        raise UsageError(
            f"conv1d: need x [Cin, T] and w [Cout, Cin/groups, K], got {list(x.shape)}, {list(w.shape)}",
            BUG_HINT,
        )
    cin, t = x.shape
    cout, cin_g, k = w.shape
    if cin % groups or cout % groups or cin // groups != cin_g:
        raise UsageError(
            f"conv1d: {cin} input / {cout} output channels do not fit {groups} groups "
            f"of a kernel with {cin_g} input channels",
            BUG_HINT,
        )
    span = (k - 1) * dilation + 1
    if t < span:
        raise UsageError(f"conv1d: input length {t} is shorter than the kernel span {span}", BUG_HINT)
    tout = (t - span) // stride + 1
    cout_g = cout // groups
    gb.work += cout * tout * cin_g * k
    lib, ctx = gb.lib, gb.room(8 * k + 24)
    px, pw = gb.f32(x), gb.f32(w)
    if groups == 1 and stride == 1 and w.kind == WEIGHT and tout % OUTPROD_STEP == 0 and cin <= OUTPROD_MAX_CIN:
        # out[:, t] = sum_j w[:, :, j] @ x[:, t + j*dilation]: one out_prod per tap, over a view
        wk = memory.derived(
            gb.tensor(w), ("taps", 1), lambda host: np.ascontiguousarray(host.reshape(cout, cin, k).transpose(2, 1, 0))
        )  # NumPy [K, Cin, Cout]
        out = None
        for j in range(k):
            xj = lib.ggml_view_4d(ctx, px, tout, cin, 1, 1, 4 * t, 4 * t * cin, 4 * t * cin, 4 * j * dilation)
            wj = lib.ggml_view_4d(
                ctx, wk, cout, cin, 1, 1, 4 * cout, 4 * cout * cin, 4 * cout * cin, 4 * j * cin * cout
            )
            y = lib.ggml_out_prod(ctx, xj, wj)  # ne (Tout, Cout) = NumPy [Cout, Tout]
            out = y if out is None else lib.ggml_add(ctx, out, y)
    else:
        xg = lib.ggml_reshape_4d(ctx, px, t, cin_g, groups, 1)
        cols = lib.ggml_im2col(ctx, pw, xg, stride, 0, 0, 0, dilation, 0, False, F32)  # [Cin_g*K, Tout, G]
        wr = lib.ggml_reshape_4d(ctx, pw, cin_g * k, cout_g, groups, 1)
        if groups == 1 and tout <= SMALL_T:  # bound by reading the weight: stream it as src0
            out = lib.ggml_cont(ctx, lib.ggml_permute(ctx, lib.ggml_mul_mat(ctx, wr, cols), 1, 0, 2, 3))
        else:
            out = lib.ggml_mul_mat(ctx, cols, wr)  # [Tout, Cout_g, G] = NumPy [Cout, Tout]
        out = lib.ggml_reshape_4d(ctx, out, tout, cout, 1, 1)
    out = _bias(gb, memory, ctx, out, b, cout, "conv1d", tout)
    return gb.new(out, (cout, tout), _reads(x, w, b))


def conv_transpose1d(
    gb: GraphBuilder, memory: PersistentMemory, x: GTensor, w: GTensor, b: GTensor | None, stride: int, groups: int
) -> GTensor:
    """``x [Cin, T]``, ``w [Cin, Cout/groups, K]`` -> ``[Cout, (T-1)*stride + K]``, untrimmed."""
    _positive("conv_transpose1d", stride=stride, groups=groups)
    if len(x.shape) != 2 or len(w.shape) != 3:
        raise UsageError(
            f"conv_transpose1d: need x [Cin, T] and w [Cin, Cout/groups, K], got {list(x.shape)}, {list(w.shape)}",
            BUG_HINT,
        )
    cin, t = x.shape
    wcin, cout_g, k = w.shape
    if wcin != cin or cin % groups:
        raise UsageError(
            f"conv_transpose1d: weight for {wcin} input channels, input has {cin} ({groups} groups)",
            BUG_HINT,
        )
    cout, length, cin_g = cout_g * groups, (t - 1) * stride + k, cin // groups
    gb.work += cout * t * k * cin_g
    lib = gb.lib
    if groups == 1 and w.kind == WEIGHT:
        out = _dense_transpose(gb, memory, x, w, stride)
    elif groups == 1:
        ctx = gb.room(8)
        out = lib.ggml_conv_transpose_1d(ctx, gb.f32(w), gb.f32(x), stride, 0, 1)
    elif cin_g == 1:
        out = _depthwise_transpose(gb, x, w, stride)
    else:
        ctx = gb.room(4 * groups + 8)
        px, pw = gb.f32(x), gb.f32(w)
        out = None
        for g in range(groups):
            xg = lib.ggml_view_4d(ctx, px, t, cin_g, 1, 1, 4 * t, 4 * t * cin_g, 4 * t * cin_g, 4 * t * cin_g * g)
            wg = lib.ggml_view_4d(
                ctx, pw, k, cout_g, cin_g, 1, 4 * k, 4 * k * cout_g, 4 * k * cout_g * cin_g, 4 * k * cout_g * cin_g * g
            )
            y = lib.ggml_conv_transpose_1d(ctx, wg, xg, stride, 0, 1)
            out = y if out is None else lib.ggml_concat(ctx, out, y, 1)
    ctx = gb.room(4)
    out = _bias(gb, memory, ctx, out, b, cout, "conv_transpose1d", length)
    return gb.new(out, (cout, length), _reads(x, w, b))


def _overlap_add(gb: GraphBuilder, taps: Any, t: int, cout: int, k: int, s: int, kp: int) -> Any:
    """Sum the ``m = kp / s`` shifted copies of ``taps`` (NumPy ``[Cout, T, kp]``) into
    ``[Cout, (T-1)*s + k]``; output sample ``t*s + j`` gets tap ``j`` of step ``t``."""
    lib = gb.lib
    m = kp // s
    ctx = gb.room(6 * m + 8)
    full = (t + m - 1) * s
    total = None
    for j in range(m):
        piece = lib.ggml_view_4d(ctx, taps, s, t, cout, 1, 4 * kp, 4 * kp * t, 4 * kp * t * cout, 4 * s * j)
        piece = lib.ggml_reshape_4d(ctx, lib.ggml_cont(ctx, piece), s * t, cout, 1, 1)
        if m > 1:
            piece = lib.ggml_pad_ext(ctx, piece, s * j, s * (m - 1 - j), 0, 0, 0, 0, 0, 0)
        total = piece if total is None else lib.ggml_add(ctx, total, piece)
    length = (t - 1) * s + k
    if length == full:
        return total
    return lib.ggml_cont(
        ctx, lib.ggml_view_4d(ctx, total, length, cout, 1, 1, 4 * full, 4 * full * cout, 4 * full * cout, 0)
    )


def _dense_weight(gb: GraphBuilder, memory: PersistentMemory, w: GTensor, s: int) -> Any:
    """`_dense_transpose`'s cached weight: rows ordered (shift r, Cout, phase p) for tap ``r*s + p``."""
    cin, cout, k = w.shape
    m = -(-k // s)
    kp = m * s
    return memory.derived(
        gb.tensor(w),
        ("convT", s),
        lambda host: np.ascontiguousarray(
            np.pad(host.reshape(cin, cout, k), ((0, 0), (0, 0), (0, kp - k)))
            .reshape(cin, cout, m, s)
            .transpose(2, 1, 3, 0)
            .reshape(m * cout * s, cin)
        ),
    )


def _dense_transpose(gb: GraphBuilder, memory: PersistentMemory, x: GTensor, w: GTensor, s: int) -> Any:
    """``groups == 1``: every tap at once as one matmul, then the overlap-add.

    The (cached) weight has rows ordered (shift r, Cout, phase p) for tap ``r*s + p``, so the
    matmul gives NumPy ``[T, m, Cout, s]`` and shift ``r``'s contribution to output block ``q``
    is the whole row block ``(q - r, r)``: the overlap-add is ``m - 1`` adds of strided row views
    of the taps placed in a zero frame, then one reorder to ``[Cout, (T+m-1)*s]``. (ggml's own
    kernel re-lays the whole kernel out on every call: about 50 ms for Mimi's 1024 -> 512 layer.)
    """
    t = x.shape[1]
    lib, ctx = gb.lib, gb.room(4)
    xt = lib.ggml_cont(ctx, lib.ggml_permute(ctx, gb.f32(x), 1, 0, 2, 3))  # ne (Cin, T)
    taps = lib.ggml_mul_mat(ctx, _dense_weight(gb, memory, w, s), xt)  # ne (m*blk, T) = NumPy [T, m, Cout, s]
    return _dense_overlap(gb, memory, taps, t, w.shape[1], w.shape[2], s)


def _dense_overlap(gb: GraphBuilder, memory: PersistentMemory, taps: Any, t: int, cout: int, k: int, s: int) -> Any:
    """`_dense_transpose`'s overlap-add of ``taps`` (ne ``(m*Cout*s, T)``) -> ne ``(length, Cout)``."""
    m = -(-k // s)
    blk = cout * s
    lib, ctx = gb.lib, gb.room(2 * m + 16)
    rows = t + m - 1
    if m == 1:
        z = taps
    else:
        # frame = zeros(pre) + taps + zeros(pre); shift r reads rows q*m*blk - r*(m-1)*blk
        pre = (m - 1) ** 2 * blk
        total = t * m * blk + 2 * pre
        row = 4 * m * blk
        frame = lib.ggml_set(ctx, memory.zeros_view(gb.room(1), total), taps, row, row * t, row * t, 4 * pre)
        z = None
        for r in range(m):
            v = lib.ggml_view_4d(
                ctx, frame, blk, rows, 1, 1, row, row * rows, row * rows, 4 * (pre - r * (m - 1) * blk)
            )
            z = v if z is None else lib.ggml_add(ctx, z, v)
    z = lib.ggml_reshape_4d(ctx, z, s, cout, rows, 1)
    out = lib.ggml_cont(ctx, lib.ggml_permute(ctx, z, 0, 2, 1, 3))  # ne (s, rows, Cout)
    full, length = rows * s, (t - 1) * s + k
    out = lib.ggml_reshape_4d(ctx, out, full, cout, 1, 1)
    if length == full:
        return out
    return lib.ggml_cont(
        ctx, lib.ggml_view_4d(ctx, out, length, cout, 1, 1, 4 * full, 4 * full * cout, 4 * full * cout, 0)
    )


def _depthwise_transpose(gb: GraphBuilder, x: GTensor, w: GTensor, s: int) -> Any:
    """One input channel per group: taps by broadcasting, then overlap-add of ``ceil(K/s)`` shifts."""
    cin, t = x.shape
    _, cout_g, k = w.shape
    cout = cin * cout_g
    m = -(-k // s)
    lib, ctx = gb.lib, gb.room(8 * m + 16)
    x4 = lib.ggml_reshape_4d(ctx, gb.f32(x), 1, t, 1, cin)  # NumPy [Cin, 1, T, 1]
    w4 = lib.ggml_reshape_4d(ctx, gb.f32(w), k, 1, cout_g, cin)  # NumPy [Cin, Cout_g, 1, K]
    taps = lib.ggml_mul(ctx, lib.ggml_repeat_4d(ctx, x4, k, t, cout_g, cin), w4)  # [Cout, T, K]
    taps = lib.ggml_reshape_4d(ctx, taps, k, t, cout, 1)
    kp = m * s
    if kp > k:
        taps = lib.ggml_pad_ext(ctx, taps, 0, kp - k, 0, 0, 0, 0, 0, 0)
    return _overlap_add(gb, taps, t, cout, k, s, kp)


def _batch_input(x: GTensor, what: str) -> tuple[int, int, int]:
    if len(x.shape) != 3:
        raise UsageError(f"{what}: need x [B, Cin, T], got {list(x.shape)}", BUG_HINT)
    b, cin, t = x.shape
    return b, cin, t


def _per_stream(gb: GraphBuilder, x: GTensor, one: Any) -> GTensor:
    """``one(x_b [Cin, T]) -> [Cout, L]`` for each stream ``b`` of ``x [B, Cin, T]``, stacked."""
    outs = []
    for i in range(x.shape[0]):
        y = one(_shape_ops.reshape(gb, _shape_ops.slice_(gb, x, 0, i, i + 1), x.shape[1:]))
        outs.append(_shape_ops.reshape(gb, y, (1, *y.shape)))
    return _shape_ops.concat(gb, outs, 0)


def conv1d_batch(
    gb: GraphBuilder,
    memory: PersistentMemory,
    x: GTensor,
    w: GTensor,
    b: GTensor | None,
    stride: int,
    dilation: int,
    groups: int,
) -> GTensor:
    """``x [B, Cin, T]`` -> ``[B, Cout, Tout]``, each stream exactly its `conv1d`.

    Without groups, the im2col matmul runs once for all streams: few outputs (the weight
    streamed as src0) with the streams as the batch axis of the columns, more outputs with the
    streams' columns as more rows of src0 (each output is the same dot product). The ``out_prod``
    path and groups run stream by stream."""
    nb, cin, t = _batch_input(x, "conv1d")
    one = lambda xi: conv1d(gb, memory, xi, w, b, stride, dilation, groups)  # noqa: E731
    if nb == 1 or groups != 1 or len(w.shape) != 3:
        return _per_stream(gb, x, one)
    cout, cin_w, k = w.shape
    span = (k - 1) * dilation + 1
    tout = (t - span) // stride + 1 if t >= span else 0
    outprod = stride == 1 and w.kind == WEIGHT and tout % OUTPROD_STEP == 0 and cin <= OUTPROD_MAX_CIN
    if cin_w != cin or tout < 1 or outprod:
        return _per_stream(gb, x, one)
    _positive("conv1d", stride=stride, dilation=dilation)
    gb.work += nb * cout * tout * cin * k
    lib, ctx = gb.lib, gb.room(12)
    px, pw = gb.f32(x), gb.f32(w)
    cols = lib.ggml_im2col(
        ctx, pw, lib.ggml_reshape_4d(ctx, px, t, cin, nb, 1), stride, 0, 0, 0, dilation, 0, False, F32
    )
    wr = lib.ggml_reshape_4d(ctx, pw, cin * k, cout, 1, 1)
    if tout <= SMALL_T:  # ne (Cout, Tout, B) -> (Tout, Cout, B)
        out = lib.ggml_cont(ctx, lib.ggml_permute(ctx, lib.ggml_mul_mat(ctx, wr, cols), 1, 0, 2, 3))
    else:  # ne (Tout*B, Cout) -> (Tout, Cout, B)
        flat = lib.ggml_reshape_4d(ctx, cols, cin * k, tout * nb, 1, 1)
        out = lib.ggml_reshape_4d(ctx, lib.ggml_mul_mat(ctx, flat, wr), tout, nb, cout, 1)
        out = lib.ggml_cont(ctx, lib.ggml_permute(ctx, out, 0, 2, 1, 3))
    out = _bias(gb, memory, ctx, out, b, cout, "conv1d", tout)
    return gb.new(out, (nb, cout, tout), _reads(x, w, b))


def conv_transpose1d_batch(
    gb: GraphBuilder, memory: PersistentMemory, x: GTensor, w: GTensor, b: GTensor | None, stride: int, groups: int
) -> GTensor:
    """``x [B, Cin, T]`` -> ``[B, Cout, (T-1)*stride + K]``, each stream exactly its
    `conv_transpose1d`: without groups one matmul of every tap of every stream (the streams'
    steps as more columns), then each stream's overlap-add; groups run stream by stream."""
    nb, cin, t = _batch_input(x, "conv_transpose1d")
    if nb == 1 or groups != 1 or w.kind != WEIGHT or len(w.shape) != 3 or w.shape[0] != cin:
        return _per_stream(gb, x, lambda xi: conv_transpose1d(gb, memory, xi, w, b, stride, groups))
    _positive("conv_transpose1d", stride=stride)
    _, cout, k = w.shape
    length = (t - 1) * stride + k
    gb.work += nb * cout * t * k * cin
    lib, ctx = gb.lib, gb.room(nb + 8)
    xt = lib.ggml_cont(ctx, lib.ggml_permute(ctx, gb.f32(x), 1, 0, 2, 3))  # ne (Cin, T, B)
    xt = lib.ggml_reshape_4d(ctx, xt, cin, t * nb, 1, 1)
    taps = lib.ggml_mul_mat(ctx, _dense_weight(gb, memory, w, stride), xt)  # ne (m*blk, T*B)
    row = 4 * (-(-k // stride)) * cout * stride
    out = None
    for i in range(nb):
        part = lib.ggml_view_4d(ctx, taps, row // 4, t, 1, 1, row, row * t, row * t, row * t * i)
        y = lib.ggml_reshape_4d(ctx, _dense_overlap(gb, memory, part, t, cout, k, stride), length, cout, 1, 1)
        out = y if out is None else lib.ggml_concat(ctx, out, y, 2)
    out = _bias(gb, memory, ctx, out, b, cout, "conv_transpose1d", length)
    return gb.new(out, (nb, cout, length), _reads(x, w, b))
