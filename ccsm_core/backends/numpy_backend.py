"""The NumPy reference backend: eager float32, always available, the truth for other backends."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..errors import BUG_HINT, UsageError
from ..tensors import float32_values
from .base import BUFFER_DTYPES

_F32 = np.float32


def _erf(x: np.ndarray) -> np.ndarray:
    """erf within 1.5e-7 absolute (Abramowitz & Stegun 7.1.26), vectorised; NumPy has no erf."""
    x64 = x.astype(np.float64)
    s = np.sign(x64)
    a = np.abs(x64)
    t = 1.0 / (1.0 + 0.3275911 * a)
    y = 1.0 - (
        ((((1.061405429 * t - 1.453152027) * t) + 1.421413741) * t - 0.284496736) * t + 0.254829592
    ) * t * np.exp(-a * a)
    return (s * y).astype(x.dtype)


class NumpyBackend:
    """Reference implementation of `ccsm_core.backends.base.Backend` on NumPy (eager)."""

    name = "numpy"

    def __init__(self, threads: int | None = None, **options: Any) -> None:
        """``threads`` is accepted and left to NumPy's BLAS; other options are errors."""
        if options:
            raise UsageError(
                f"numpy: unknown backend option(s) {', '.join(sorted(options))}",
                "the NumPy backend takes only threads (left to its BLAS)",
            )
        self.threads = threads

    # data in and out
    def asarray(self, a: np.ndarray) -> np.ndarray:
        a = np.asarray(a)
        return a.astype(np.int32) if a.dtype.kind in "iub" else a.astype(_F32, copy=False)

    def weight(self, t: Any) -> np.ndarray:
        return float32_values(t)

    def zeros(self, shape: Sequence[int], dtype: str = "float32") -> np.ndarray:
        if dtype not in BUFFER_DTYPES:
            raise UsageError(f"numpy: zeros() dtype must be one of {', '.join(BUFFER_DTYPES)}, got {dtype!r}", BUG_HINT)
        return np.zeros(tuple(shape), dtype)

    def write(self, buf: np.ndarray, x: np.ndarray, start: Any, axis: int = 0) -> np.ndarray:
        idx: list[Any] = [slice(None)] * buf.ndim
        if isinstance(start, np.ndarray):  # one row index per row of x
            idx[axis] = start.astype(np.intp)
        else:
            idx[axis] = slice(start, start + x.shape[axis])
        buf[tuple(idx)] = x
        return buf

    def to_numpy(self, x: np.ndarray) -> np.ndarray:
        return np.array(x, copy=True)

    def shape(self, x: np.ndarray) -> tuple[int, ...]:
        return tuple(x.shape)

    # elementwise
    def add(self, a, b):
        return np.add(a, b, dtype=_F32)

    def mul(self, a, b):
        return np.multiply(a, b, dtype=_F32)

    def scale(self, x, s: float):
        return (x * _F32(s)).astype(_F32, copy=False)

    def sum(self, x, axis: int):
        return x.sum(axis=axis, dtype=_F32)

    def silu(self, x):
        return (x / (1.0 + np.exp(-x))).astype(_F32, copy=False)

    def swiglu(self, gate, up):
        return (self.silu(gate) * up).astype(_F32, copy=False)

    def gelu(self, x, approximate: bool = False):
        if approximate:
            inner = np.float32(np.sqrt(2.0 / np.pi)) * (x + np.float32(0.044715) * x * x * x)
            return (0.5 * x * (1.0 + np.tanh(inner))).astype(_F32, copy=False)
        return (0.5 * x * (1.0 + _erf(x / np.sqrt(2.0).astype(_F32)))).astype(_F32, copy=False)

    def elu(self, x, alpha: float = 1.0):
        return np.where(x > 0, x, _F32(alpha) * np.expm1(np.minimum(x, 0))).astype(_F32, copy=False)

    def softmax(self, x):
        e = np.exp(x - x.max(axis=-1, keepdims=True))
        return (e / e.sum(axis=-1, keepdims=True)).astype(_F32, copy=False)

    # selection (optional ops)
    def top_k(self, x, k: int):
        """Ids of the ``k`` largest of each row (largest first here; the contract gives no order)."""
        return np.argsort(-x, axis=-1, kind="stable")[..., :k].astype(np.int32)

    def argsort(self, x, descending: bool = False):
        return np.argsort(-x if descending else x, axis=-1, kind="stable").astype(np.int32)

    def take(self, table, ids):
        return table[np.asarray(ids, dtype=np.int64).reshape(-1)]

    def astype(self, x, dtype: str):
        if dtype not in ("float32", "int32"):
            raise UsageError(f"astype: dtype must be float32 or int32, got {dtype!r}", BUG_HINT)
        return x.astype(np.float32 if dtype == "float32" else np.int32)

    # layers
    def embedding(self, table, ids):
        return table[np.asarray(ids, dtype=np.int64)]

    def matmul(self, x, w):
        return np.matmul(x, w.T).astype(_F32, copy=False)

    def matmul_rows(self, x, w, group: int = 1):
        """`matmul` of ``x [B*group, K]`` with each group of rows computed as it is alone (a
        stacked product runs the same BLAS call per group), for batched decoding."""
        if x.ndim != 2 or group < 1 or x.shape[0] % group:
            raise UsageError(f"matmul_rows: {list(x.shape)} is not a whole number of groups of {group} rows", BUG_HINT)
        stacked = np.matmul(x.reshape(-1, group, x.shape[1]), w.T)
        return stacked.reshape(x.shape[0], -1).astype(_F32, copy=False)

    def rms_norm(self, x, w, eps: float):
        ms = np.mean(np.square(x, dtype=_F32), axis=-1, keepdims=True)
        return (x / np.sqrt(ms + _F32(eps))) * w

    def layer_norm(self, x, w, b, eps: float):
        mu = x.mean(axis=-1, keepdims=True)
        var = np.square(x - mu).mean(axis=-1, keepdims=True)
        return ((x - mu) / np.sqrt(var + _F32(eps))) * w + b

    def rope(self, x, positions, freqs, interleaved: bool = True, base: float | None = None):
        ang = np.asarray(positions, _F32)[:, None] * np.asarray(freqs, _F32)[None, :]  # [S, D/2]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        if interleaved:
            a, b = x[..., 0::2], x[..., 1::2]
        else:
            half = x.shape[-1] // 2
            a, b = x[..., :half], x[..., half:]
        ra, rb = a * cos - b * sin, a * sin + b * cos
        if interleaved:
            return np.stack([ra, rb], axis=-1).reshape(x.shape).astype(_F32, copy=False)
        return np.concatenate([ra, rb], axis=-1).astype(_F32, copy=False)

    def attention(self, q, k, v, mask, scale: float):
        s, h, d = q.shape
        kv = k.shape[1]
        rep = h // kv
        qh = q.transpose(1, 0, 2)  # [H, S, D]
        kh = np.repeat(k.transpose(1, 0, 2), rep, axis=0)  # [H, T, D]
        vh = np.repeat(v.transpose(1, 0, 2), rep, axis=0)
        scores = np.matmul(qh, kh.transpose(0, 2, 1)) * _F32(scale)
        if mask is not None:
            scores = scores + mask[None]
        out = np.matmul(self.softmax(scores), vh)  # [H, S, D]
        return out.transpose(1, 0, 2).astype(_F32, copy=False)

    def conv1d(self, x, w, b, stride: int = 1, dilation: int = 1, groups: int = 1):
        cin, t = x.shape
        cout, cin_g, k = w.shape
        span = (k - 1) * dilation + 1
        tout = (t - span) // stride + 1
        out = np.empty((cout, max(tout, 0)), _F32)
        cout_g = cout // groups
        for g in range(groups):
            xg = x[g * cin_g : (g + 1) * cin_g]
            # columns [cin_g * k, tout]
            idx = np.arange(tout)[None, :] * stride + np.arange(k)[:, None] * dilation  # [k, tout]
            cols = xg[:, idx].reshape(cin_g * k, tout)
            wg = w[g * cout_g : (g + 1) * cout_g].reshape(cout_g, cin_g * k)
            out[g * cout_g : (g + 1) * cout_g] = wg @ cols
        if b is not None:
            out += b[:, None]
        return out

    def conv_transpose1d(self, x, w, b, stride: int = 1, groups: int = 1):
        cin, t = x.shape
        _, cout_g, k = w.shape
        cin_g = cin // groups
        cout = cout_g * groups
        if groups == 1:
            contrib = (w.reshape(cin, cout * k).T @ x).reshape(cout, k, t)
        elif cin_g == 1 and cout_g == 1:  # depthwise
            contrib = w[:, 0, :, None] * x[:, None, :]
        else:
            contrib = np.concatenate(
                [
                    (
                        w[g * cin_g : (g + 1) * cin_g].reshape(cin_g, cout_g * k).T @ x[g * cin_g : (g + 1) * cin_g]
                    ).reshape(cout_g, k, t)
                    for g in range(groups)
                ]
            )
        out = np.zeros((cout, (t - 1) * stride + k), _F32)
        for j in range(k):  # overlap-add of each kernel tap
            out[:, j : j + (t - 1) * stride + 1 : stride] += contrib[:, j, :]
        if b is not None:
            out += b[:, None]
        return out

    # shape ops
    def pad(self, x, axis: int, left: int, right: int, mode: str = "constant"):
        widths = [(0, 0)] * x.ndim
        widths[axis] = (left, right)
        return np.pad(x, widths, mode="edge" if mode == "replicate" else "constant")

    def concat(self, xs, axis: int):
        return np.concatenate(list(xs), axis=axis)

    def reshape(self, x, shape):
        return np.reshape(x, tuple(shape))

    def transpose(self, x, perm):
        return np.ascontiguousarray(np.transpose(x, tuple(perm)))

    def slice(self, x, axis: int, start: int, stop: int):
        idx = [slice(None)] * x.ndim
        idx[axis] = slice(start, stop)
        out = x[tuple(idx)]
        return out.astype(_F32) if out.dtype != _F32 else out
