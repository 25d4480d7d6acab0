"""1-D convolution and transposed convolution on GGML graphs (helpers of `GgmlBackend`).

``conv1d`` is im2col + one batched matmul (groups are the batch axis), in float32.
``conv_transpose1d`` with ``groups == 1`` is one matmul of every tap (against a cached
re-laid-out weight) and an overlap-add; depthwise-style groups (one input channel per group)
multiply by broadcasting and overlap-add the taps; other group counts run ggml's kernel per group.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ccsm_core.errors import UsageError

from . import _ffi
from ._tensor import WEIGHT, GTensor

if TYPE_CHECKING:
    from .backend import GgmlBackend

F32 = _ffi.F32


def _positive(what: str, **values: Any) -> None:
    for name, v in values.items():
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise UsageError(f"{what}: {name} must be a positive int, got {v!r}")


def _bias(be: "GgmlBackend", ctx: Any, out: Any, b: GTensor | None, cout: int, what: str) -> Any:
    if b is None:
        return out
    if b.shape != (cout,):
        raise UsageError(f"{what}: bias shape {list(b.shape)} does not match {cout} output channels")
    lib = be._lib
    return lib.ggml_add(ctx, out, lib.ggml_reshape_4d(ctx, be._pf(b), 1, cout, 1, 1))


def _reads(*ts: GTensor | None) -> bool:
    return any(t is not None and t.base is not None for t in ts)


def conv1d(be: "GgmlBackend", x: GTensor, w: GTensor, b: GTensor | None, stride: int, dilation: int,
           groups: int) -> GTensor:
    """``x [Cin, T]``, ``w [Cout, Cin/groups, K]`` -> ``[Cout, Tout]`` (no padding)."""
    _positive("conv1d", stride=stride, dilation=dilation, groups=groups)
    if len(x.shape) != 2 or len(w.shape) != 3:
        raise UsageError(f"conv1d: need x [Cin, T] and w [Cout, Cin/groups, K], got {list(x.shape)}, {list(w.shape)}")
    cin, t = x.shape
    cout, cin_g, k = w.shape
    if cin % groups or cout % groups or cin // groups != cin_g:
        raise UsageError(f"conv1d: {cin} input / {cout} output channels do not fit {groups} groups "
                         f"of a kernel with {cin_g} input channels")
    span = (k - 1) * dilation + 1
    if t < span:
        raise UsageError(f"conv1d: input length {t} is shorter than the kernel span {span}")
    tout = (t - span) // stride + 1
    cout_g = cout // groups
    be._work += cout * tout * cin_g * k
    lib, ctx = be._lib, be._room(24)
    px, pw = be._pf(x), be._pf(w)
    xg = lib.ggml_reshape_4d(ctx, px, t, cin_g, groups, 1)
    cols = lib.ggml_im2col(ctx, pw, xg, stride, 0, 0, 0, dilation, 0, False, F32)  # [Cin_g*K, Tout, G]
    wr = lib.ggml_reshape_4d(ctx, pw, cin_g * k, cout_g, groups, 1)
    out = lib.ggml_mul_mat(ctx, cols, wr)  # [Tout, Cout_g, G] = NumPy [Cout, Tout]
    out = lib.ggml_reshape_4d(ctx, out, tout, cout, 1, 1)
    out = _bias(be, ctx, out, b, cout, "conv1d")
    return be._new(out, (cout, tout), _reads(x, w, b))


def conv_transpose1d(be: "GgmlBackend", x: GTensor, w: GTensor, b: GTensor | None, stride: int,
                     groups: int) -> GTensor:
    """``x [Cin, T]``, ``w [Cin, Cout/groups, K]`` -> ``[Cout, (T-1)*stride + K]``, untrimmed."""
    _positive("conv_transpose1d", stride=stride, groups=groups)
    if len(x.shape) != 2 or len(w.shape) != 3:
        raise UsageError(f"conv_transpose1d: need x [Cin, T] and w [Cin, Cout/groups, K], "
                         f"got {list(x.shape)}, {list(w.shape)}")
    cin, t = x.shape
    wcin, cout_g, k = w.shape
    if wcin != cin or cin % groups:
        raise UsageError(f"conv_transpose1d: weight for {wcin} input channels, input has {cin} "
                         f"({groups} groups)")
    cout, length, cin_g = cout_g * groups, (t - 1) * stride + k, cin // groups
    be._work += cout * t * k * cin_g
    lib = be._lib
    if groups == 1 and w.kind == WEIGHT:
        out = _dense_transpose(be, x, w, stride)
    elif groups == 1:
        ctx = be._room(8)
        out = lib.ggml_conv_transpose_1d(ctx, be._pf(w), be._pf(x), stride, 0, 1)
    elif cin_g == 1:
        out = _depthwise_transpose(be, x, w, stride)
    else:
        ctx = be._room(4 * groups + 8)
        px, pw = be._pf(x), be._pf(w)
        out = None
        for g in range(groups):
            xg = lib.ggml_view_4d(ctx, px, t, cin_g, 1, 1, 4 * t, 4 * t * cin_g, 4 * t * cin_g,
                                  4 * t * cin_g * g)
            wg = lib.ggml_view_4d(ctx, pw, k, cout_g, cin_g, 1, 4 * k, 4 * k * cout_g, 4 * k * cout_g * cin_g,
                                  4 * k * cout_g * cin_g * g)
            y = lib.ggml_conv_transpose_1d(ctx, wg, xg, stride, 0, 1)
            out = y if out is None else lib.ggml_concat(ctx, out, y, 1)
    ctx = be._room(4)
    out = _bias(be, ctx, out, b, cout, "conv_transpose1d")
    return be._new(out, (cout, length), _reads(x, w, b))


def _overlap_add(be: "GgmlBackend", taps: Any, t: int, cout: int, k: int, s: int, kp: int,
                 tap_major: bool) -> Any:
    """Sum the ``m = kp / s`` shifted copies of ``taps`` into ``[Cout, (T-1)*s + k]``.

    ``taps`` holds every tap's contribution: NumPy ``[Cout, T, kp]`` (``tap_major=False``) or
    ``[T, Cout, kp]`` (``tap_major=True``); output sample ``t*s + j`` gets tap ``j`` of step ``t``."""
    lib = be._lib
    m = kp // s
    ctx = be._room(6 * m + 8)
    full = (t + m - 1) * s
    total = None
    for j in range(m):
        if tap_major:  # ne (s, Cout, T) -> (s, T, Cout)
            piece = lib.ggml_view_4d(ctx, taps, s, cout, t, 1, 4 * kp, 4 * kp * cout, 4 * kp * cout * t, 4 * s * j)
            piece = lib.ggml_permute(ctx, piece, 0, 2, 1, 3)
        else:
            piece = lib.ggml_view_4d(ctx, taps, s, t, cout, 1, 4 * kp, 4 * kp * t, 4 * kp * t * cout, 4 * s * j)
        piece = lib.ggml_reshape_4d(ctx, lib.ggml_cont(ctx, piece), s * t, cout, 1, 1)
        if m > 1:
            piece = lib.ggml_pad_ext(ctx, piece, s * j, s * (m - 1 - j), 0, 0, 0, 0, 0, 0)
        total = piece if total is None else lib.ggml_add(ctx, total, piece)
    length = (t - 1) * s + k
    if length == full:
        return total
    return lib.ggml_cont(ctx, lib.ggml_view_4d(ctx, total, length, cout, 1, 1, 4 * full, 4 * full * cout,
                                               4 * full * cout, 0))


def _dense_transpose(be: "GgmlBackend", x: GTensor, w: GTensor, s: int) -> Any:
    """``groups == 1``: every tap at once as one matmul with the (cached) weight laid out
    ``[Cout * K, Cin]``, then overlap-add. ggml's own kernel re-lays the whole kernel out on
    every call (about 50 ms for Mimi's 1024 -> 512, K 16 layer)."""
    import numpy as np

    cin, t = x.shape
    _, cout, k = w.shape
    kp = -(-k // s) * s
    wt = be._derived(w, ("convT", s), lambda host: np.ascontiguousarray(
        np.pad(host.reshape(cin, cout, k), ((0, 0), (0, 0), (0, kp - k))).reshape(cin, cout * kp).T))
    lib, ctx = be._lib, be._room(8)
    xt = lib.ggml_cont(ctx, lib.ggml_permute(ctx, be._pf(x), 1, 0, 2, 3))  # ne (Cin, T)
    taps = lib.ggml_mul_mat(ctx, be._p(wt), xt)  # ne (Cout*kp, T) = NumPy [T, Cout, kp]
    return _overlap_add(be, taps, t, cout, k, s, kp, tap_major=True)


def _depthwise_transpose(be: "GgmlBackend", x: GTensor, w: GTensor, s: int) -> Any:
    """One input channel per group: taps by broadcasting, then overlap-add of ``ceil(K/s)`` shifts."""
    cin, t = x.shape
    _, cout_g, k = w.shape
    cout = cin * cout_g
    m = -(-k // s)
    lib, ctx = be._lib, be._room(8 * m + 16)
    x4 = lib.ggml_reshape_4d(ctx, be._pf(x), 1, t, 1, cin)  # NumPy [Cin, 1, T, 1]
    w4 = lib.ggml_reshape_4d(ctx, be._pf(w), k, 1, cout_g, cin)  # NumPy [Cin, Cout_g, 1, K]
    taps = lib.ggml_mul(ctx, lib.ggml_repeat_4d(ctx, x4, k, t, cout_g, cin), w4)  # [Cout, T, K]
    taps = lib.ggml_reshape_4d(ctx, taps, k, t, cout, 1)
    kp = m * s
    if kp > k:
        taps = lib.ggml_pad_ext(ctx, taps, 0, kp - k, 0, 0, 0, 0, 0, 0)
    return _overlap_add(be, taps, t, cout, k, s, kp, tap_major=False)
