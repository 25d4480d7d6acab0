"""`MlxBackend`: the ccsm backend contract on MLX lazy arrays.

Every op builds lazy MLX arrays; ``to_numpy`` is the evaluation point (``mx.eval`` of the
result and of every buffer written since the last evaluation). Activations are float32;
weights are what `weights.convert` makes of them (float32/16, bfloat16, or `QWeight`). Buffers
from ``zeros`` are materialized at once and updated with ``buf[idx] = x`` (MLX ``slice_update``,
done in place when nothing else holds the old contents); reads built before a write keep the
old contents because they hold the old graph node.
"""

from __future__ import annotations

import sys
import time
import weakref
from collections.abc import Sequence
from typing import Any

import mlx.core as mx
import numpy as np

from ccsm_core.backends.base import BUFFER_DTYPES
from ccsm_core.errors import BUG_HINT, BackendUnavailable, UsageError

from .cache import WeightCache, tensor_key
from .weights import Precision, QWeight, convert, needs_work, source_info

OPTIONS = ("dtype", "quantize", "group_size", "device", "cache", "cache_dir", "progress", "threads")
_F32 = mx.float32
_SQRT_2_PI = float(np.float32(np.sqrt(2.0 / np.pi)))
_INV_SQRT_2 = float(np.float32(1.0 / np.sqrt(2.0)))


def _axis(x: Any, axis: int) -> int:
    nd = len(x.shape)
    if not -nd <= axis < nd:
        raise UsageError(f"axis {axis} is out of range for a {nd}-D tensor", BUG_HINT)
    return axis % nd


class MlxBackend:
    """The backend contract on MLX (see the module docstring). Options are validated here."""

    name = "mlx"

    def __init__(
        self,
        *,
        dtype: Any = None,
        quantize: Any = None,
        group_size: Any = 64,
        device: str | None = None,
        cache: Any = "auto",
        cache_dir: str | None = None,
        progress: Any = None,
        threads: Any = None,
    ) -> None:
        self.precision = Precision.parse(dtype, quantize, group_size)
        if device is not None:
            if device not in ("cpu", "gpu"):
                raise UsageError(f"mlx backend: device {device!r} is not cpu or gpu", "pass device=cpu or device=gpu")
            dev = mx.gpu if device == "gpu" else mx.cpu
            if not mx.is_available(dev):
                version = mx.__version__  # type: ignore[attr-defined]  # mlx's stubs lack __version__
                raise BackendUnavailable(
                    f"mlx has no {device} device here (mlx {version})",
                    "use device=cpu, or install mlx with Metal (macOS) or CUDA",
                )
            mx.set_default_device(dev)  # process-wide, as MLX defines it
        self.device = mx.default_device()
        self._on_gpu = self.device.type == mx.gpu
        mode = {True: "always", False: "off", None: "auto"}.get(cache, cache) if not isinstance(cache, str) else cache
        if mode not in ("auto", "always", "off"):
            raise UsageError(f"mlx backend: cache={cache!r} is not auto, always or off", "pass cache=auto")
        self.cache_mode = mode
        self.cache = WeightCache(cache_dir) if mode != "off" else None
        self._progress_opt = progress
        self._bar: Any = None
        self._pending: dict[int, mx.array] = {}
        self._buffers: set[int] = set()
        self._half: set[int] = set()  # buffers made with dtype="float16" (values rounded on write)
        self._int_bounds: dict[int, tuple[int, int]] = {}
        self._derived: dict[tuple[int, str], tuple[Any, mx.array]] = {}
        self._periods: dict[bytes, mx.array] = {}
        self.eval_s = 0.0
        self.load_stats = {"tensors": 0, "converted_s": 0.0, "source_bytes": 0}

    # -- data in and out ------------------------------------------------------------------
    def asarray(self, a: np.ndarray) -> mx.array:
        a = np.asarray(a)
        if a.dtype.kind in "iub":
            out = mx.array(a.astype(np.int32))
            if a.size:
                key = id(out)
                self._int_bounds[key] = (int(a.min()), int(a.max()))
                weakref.finalize(out, self._int_bounds.pop, key, None)
            return out
        return mx.array(a.astype(np.float32, copy=False))

    def weight(self, t: Any) -> mx.array | QWeight:
        """Convert one stored tensor, through the disk cache when that pays (``cache=auto``)."""
        t0 = time.perf_counter()
        use_cache = self.cache is not None and (self.cache_mode == "always" or needs_work(t, self.precision))
        cache = self.cache if use_cache else None
        value = None
        if cache is not None:
            key = tensor_key(t, self.precision)
            value = cache.get(key)
        if value is None:
            value = convert(t, self.precision)
            mx.eval(value.arrays() if isinstance(value, QWeight) else value)
            if cache is not None:
                stored, shape, _ = source_info(t)
                cache.put(
                    key,
                    value,
                    {
                        "name": getattr(t, "name", None),
                        "dtype": stored,
                        "shape": list(shape),
                        "options": self.precision.key(),
                    },
                )
        nbytes = int(np.asarray(source_info(t)[2]).nbytes)
        self.load_stats["tensors"] += 1
        self.load_stats["source_bytes"] += nbytes
        self.load_stats["converted_s"] += time.perf_counter() - t0
        self._progress(nbytes)
        return value

    def _progress(self, nbytes: int) -> None:
        show = sys.stderr.isatty() if self._progress_opt is None else bool(self._progress_opt)
        if not show:
            return
        if self._bar is None:
            from tqdm import tqdm

            self._bar = tqdm(
                unit="B",
                unit_scale=True,
                desc=f"mlx: loading weights ({self.precision.key()})",
                leave=False,
                file=sys.stderr,
            )
        self._bar.update(nbytes)

    def end_progress(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def zeros(self, shape: Sequence[int], dtype: str = "float32") -> mx.array:
        """A float32 buffer; ``float16`` buffers keep float32 storage holding half-precision values."""
        if dtype not in BUFFER_DTYPES:
            raise UsageError(f"mlx: zeros() dtype must be one of {', '.join(BUFFER_DTYPES)}, got {dtype!r}", BUG_HINT)
        buf = mx.zeros(tuple(int(s) for s in shape), _F32)
        mx.eval(buf)
        self._buffers.add(id(buf))
        weakref.finalize(buf, self._buffers.discard, id(buf))
        if dtype == "float16":
            self._half.add(id(buf))
            weakref.finalize(buf, self._half.discard, id(buf))
        return buf

    def write(self, buf: mx.array, x: Any, start: Any, axis: int = 0) -> mx.array:
        if id(buf) not in self._buffers:
            raise UsageError("write: the target is not a buffer made by zeros()", BUG_HINT)
        x = self._dense(x)
        if id(buf) in self._half:
            x = x.astype(mx.float16)
        if isinstance(start, mx.array):  # one row index per row of x, on axis 0
            if axis != 0 or start.shape != (x.shape[0],) or x.shape[1:] != buf.shape[1:]:
                raise UsageError(
                    f"write: rows {list(start.shape)} do not fit {list(x.shape)} into {list(buf.shape)}",
                    BUG_HINT,
                )
            buf[start] = x.astype(_F32)
            self._pending[id(buf)] = buf
            return buf
        ax = _axis(buf, axis)
        n = x.shape[ax] if x.ndim == buf.ndim else -1
        if (
            x.ndim != buf.ndim
            or any(x.shape[i] != buf.shape[i] for i in range(buf.ndim) if i != ax)
            or not 0 <= start <= buf.shape[ax] - n
        ):
            raise UsageError(f"write: {list(x.shape)} does not fit {list(buf.shape)} at {start} on axis {ax}", BUG_HINT)
        idx = [slice(None)] * buf.ndim
        idx[ax] = slice(start, start + n)
        buf[tuple(idx)] = x if x.dtype == _F32 else x.astype(_F32)
        self._pending[id(buf)] = buf
        return buf

    def to_numpy(self, x: Any) -> np.ndarray:
        self.end_progress()
        x = self._dense(x)
        if x.dtype not in (_F32, mx.int32):
            x = x.astype(_F32 if mx.issubdtype(x.dtype, mx.floating) else mx.int32)
        t0 = time.perf_counter()
        mx.eval(x, *self._pending.values())
        self.eval_s += time.perf_counter() - t0
        self._pending.clear()
        return np.array(x, copy=True)

    def shape(self, x: Any) -> tuple[int, ...]:
        return tuple(x.shape)

    def stats(self) -> dict[str, float]:
        """Seconds spent inside ``mx.eval`` (``ccsm bench`` derives the Python share from it)."""
        return {"compute_s": self.eval_s}

    def close(self) -> None:
        self.end_progress()
        self._derived.clear()

    # -- helpers ---------------------------------------------------------------------------
    def _dense(self, x: Any) -> mx.array:
        """A float32/int32 array for ops without a special path (dequantizes, upcasts weights)."""
        if isinstance(x, QWeight):
            return x.dense()
        if not isinstance(x, mx.array):
            x = mx.array(np.asarray(x, np.float32))
        return x if x.dtype in (_F32, mx.int32) else x.astype(_F32)

    def _derive(self, w: Any, kind: str, make: Any) -> mx.array:
        """A weight in another layout (conv kernels), made once per weight and kept."""
        key = (id(w), kind)
        hit = self._derived.get(key)
        if hit is None or hit[0] is not w:
            hit = (w, make(self._dense(w)))
            self._derived[key] = hit
        return hit[1]

    # -- elementwise and reductions ------------------------------------------------------------
    def add(self, a, b):
        return mx.add(self._dense(a), self._dense(b))

    def mul(self, a, b):
        return mx.multiply(self._dense(a), self._dense(b))

    def scale(self, x, s: float):
        return self._dense(x) * float(s)

    def sum(self, x, axis: int):
        x = self._dense(x)
        return mx.sum(x, axis=_axis(x, axis))

    def silu(self, x):
        x = self._dense(x)
        return x * mx.sigmoid(x)

    def swiglu(self, gate, up):
        return self.silu(gate) * self._dense(up)

    def gelu(self, x, approximate: bool = False):
        x = self._dense(x)
        if approximate:
            inner = (x + 0.044715 * x * x * x) * _SQRT_2_PI
            return 0.5 * x * (1.0 + mx.tanh(inner))
        return 0.5 * x * (1.0 + mx.erf(x * _INV_SQRT_2))

    def elu(self, x, alpha: float = 1.0):
        x = self._dense(x)
        return mx.where(x > 0, x, mx.expm1(mx.minimum(x, 0.0)) * float(alpha))

    def softmax(self, x):
        return mx.softmax(self._dense(x), axis=-1, precise=True)

    # -- layers ----------------------------------------------------------------------------
    def embedding(self, table, ids):
        bounds = self._int_bounds.get(id(ids))
        rows = table.shape[0]
        if ids.dtype != mx.int32 or (bounds is not None and (bounds[0] < 0 or bounds[1] >= rows)):
            raise UsageError(
                f"embedding: ids must be int32 in 0..{rows - 1}"
                + (f", got {bounds[0]}..{bounds[1]}" if bounds else ""),
                BUG_HINT,
            )
        if isinstance(table, QWeight):
            return table.rows(ids)
        out = mx.take(table, ids, axis=0)
        return out if out.dtype == _F32 else out.astype(_F32)

    def matmul(self, x, w):
        x = self._dense(x)
        k = x.shape[-1]
        if len(w.shape) != 2 or w.shape[1] != k:
            raise UsageError(
                f"matmul: {list(x.shape)} x weight {list(w.shape)}: inner sizes differ or weight is not 2-D",
                BUG_HINT,
            )
        if isinstance(w, QWeight):
            if self._on_gpu and w.scales.dtype != _F32:  # Metal's fast path: activations in the scale type
                y = mx.quantized_matmul(
                    x.astype(w.scales.dtype),
                    w.wq,
                    w.scales,
                    w.biases,
                    transpose=True,
                    group_size=w.group_size,
                    bits=w.bits,
                )
                return y.astype(_F32)
            return mx.quantized_matmul(
                x, w.wq, w.scales, w.biases, transpose=True, group_size=w.group_size, bits=w.bits
            )
        if w.dtype in (_F32, mx.int32):
            return mx.matmul(x, w.T) if w.dtype == _F32 else mx.matmul(x, w.astype(_F32).T)
        # 16-bit weight: multiply in its type (no per-call upcast of the whole matrix)
        return mx.matmul(x.astype(w.dtype), w.T).astype(_F32)

    def rms_norm(self, x, w, eps: float):
        return mx.fast.rms_norm(self._dense(x), self._dense(w), float(eps))

    def layer_norm(self, x, w, b, eps: float):
        return mx.fast.layer_norm(self._dense(x), self._dense(w), self._dense(b), float(eps))

    def rope(self, x, positions, freqs, interleaved: bool = True, base: float | None = None):
        x = self._dense(x)
        s, h, d = x.shape
        f = np.asarray(freqs, np.float32)
        if s == 1:  # decode step: one position, MLX's fused kernel with an array offset
            periods = self._derive_freqs(f)
            y = mx.fast.rope(
                mx.transpose(x, (1, 0, 2))[None],
                d,
                traditional=interleaved,
                base=None,
                scale=1.0,
                offset=positions,
                freqs=periods,
            )
            return mx.transpose(y[0], (1, 0, 2))
        ang = positions.astype(_F32)[:, None] * mx.array(f)[None, :]  # [S, D/2], as NumPy
        cos, sin = mx.cos(ang)[:, None, :], mx.sin(ang)[:, None, :]
        if interleaved:
            pair = x.reshape(s, h, d // 2, 2)
            a, b = pair[..., 0], pair[..., 1]
            return mx.stack([a * cos - b * sin, a * sin + b * cos], axis=-1).reshape(s, h, d)
        a, b = x[..., : d // 2], x[..., d // 2 :]
        return mx.concatenate([a * cos - b * sin, a * sin + b * cos], axis=-1)

    def _derive_freqs(self, f: np.ndarray) -> mx.array:
        """MLX's ``freqs`` are periods: ``1 / freqs`` (zero frequencies become infinite periods)."""
        key = f.tobytes()
        hit = self._periods.get(key)
        if hit is None:
            with np.errstate(divide="ignore"):
                hit = self._periods[key] = mx.array((1.0 / f.astype(np.float64)).astype(np.float32))
        return hit

    def attention(self, q, k, v, mask, scale: float):
        q, k, v = self._dense(q), self._dense(k), self._dense(v)
        if q.shape[1] % k.shape[1]:
            raise UsageError(f"attention: {q.shape[1]} query heads do not group over {k.shape[1]} KV heads", BUG_HINT)
        qh, kh, vh = (mx.transpose(t, (1, 0, 2))[None] for t in (q, k, v))
        m = None if mask is None else self._dense(mask)
        out = mx.fast.scaled_dot_product_attention(qh, kh, vh, scale=float(scale), mask=m)
        return mx.transpose(out[0], (1, 0, 2))

    def conv1d(self, x, w, b, stride: int = 1, dilation: int = 1, groups: int = 1):
        x = self._dense(x)
        cout, cin_g, k = w.shape
        self._check_conv(x, cin_g * groups, (k - 1) * dilation + 1, stride, groups, cout)
        wm = self._derive(w, "conv1d", lambda a: mx.transpose(a, (0, 2, 1)))  # [Cout, K, Cin/g]
        y = mx.conv1d(x.T[None], wm, stride=stride, padding=0, dilation=dilation, groups=groups)[0].T
        return y if b is None else y + self._dense(b)[:, None]

    def conv_transpose1d(self, x, w, b, stride: int = 1, groups: int = 1):
        x = self._dense(x)
        cin, cout_g, k = w.shape
        self._check_conv(x, cin, 1, stride, groups, cout_g * groups)
        cin_g = cin // groups

        def layout(a: mx.array) -> mx.array:  # [Cin, Cout/g, K] -> [Cout, K, Cin/g]
            return a.reshape(groups, cin_g, cout_g, k).transpose(0, 2, 3, 1).reshape(groups * cout_g, k, cin_g)

        wm = self._derive(w, f"convT{groups}", layout)
        y = mx.conv_transpose1d(x.T[None], wm, stride=stride, groups=groups)[0].T
        return y if b is None else y + self._dense(b)[:, None]

    @staticmethod
    def _check_conv(x: mx.array, cin: int, span: int, stride: int, groups: int, cout: int) -> None:
        if x.ndim != 2 or x.shape[0] != cin or stride < 1 or groups < 1 or cin % groups or cout % groups:
            raise UsageError(
                f"conv: input {list(x.shape)} does not match {cin} channels in {groups} groups, stride {stride}",
                BUG_HINT,
            )
        if x.shape[1] < span:
            raise UsageError(f"conv: input of {x.shape[1]} steps is shorter than the kernel span {span}", BUG_HINT)

    # -- shape ops ---------------------------------------------------------------------------
    def pad(self, x, axis: int, left: int, right: int, mode: str = "constant"):
        x = self._dense(x)
        if mode not in ("constant", "replicate") or left < 0 or right < 0:
            raise UsageError(f"pad: mode {mode!r} with ({left}, {right}) is not supported", BUG_HINT)
        widths = [(0, 0)] * x.ndim
        widths[_axis(x, axis)] = (int(left), int(right))
        return mx.pad(x, widths, mode="edge" if mode == "replicate" else "constant")

    def concat(self, xs, axis: int):
        xs = [self._dense(x) for x in xs]
        try:
            return mx.concatenate(xs, axis=_axis(xs[0], axis))
        except ValueError as e:
            raise UsageError(f"concat: {e}", BUG_HINT) from None

    def reshape(self, x, shape):
        x = self._dense(x)
        try:
            return mx.reshape(x, tuple(int(s) for s in shape))
        except ValueError as e:
            raise UsageError(f"reshape: {e}", BUG_HINT) from None

    def transpose(self, x, perm):
        x = self._dense(x)
        if sorted(perm) != list(range(x.ndim)):
            raise UsageError(f"transpose: {list(perm)} is not a permutation of {x.ndim} axes", BUG_HINT)
        return mx.transpose(x, tuple(perm))

    def slice(self, x, axis: int, start: int, stop: int):
        x = self._dense(x)
        ax = _axis(x, axis)
        lo, hi, _ = slice(start, stop).indices(x.shape[ax])
        if hi <= lo:
            raise UsageError(f"slice: [{start}:{stop}] of an axis of {x.shape[ax]} is empty", BUG_HINT)
        idx = [slice(None)] * x.ndim
        idx[ax] = slice(lo, hi)
        return x[tuple(idx)]
