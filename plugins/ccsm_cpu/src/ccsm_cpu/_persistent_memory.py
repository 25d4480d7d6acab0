"""Tensors that live as long as the backend: weights, ``zeros`` buffers and what is derived from them.

Their data is host memory we own or the caller's (mapped) array, attached to ggml with
``ggml_backend_cpu_buffer_from_ptr`` (no copy when the array is aligned and contiguous); their
metadata sits in contexts of this store. Also here: weights re-laid out once (`derived`), GGML's
repacked twins of Q4_0/Q4_K weights, RoPE frequency factors and a pool of zeros to view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from ccsm_core.errors import FormatError

from . import _ffi, _huge_pages
from ._tensor import WEIGHT, GTensor, check_shape, ne, prod
from .lib import Context, Ggml, GgmlError, Owned, check_status

F32 = _ffi.F32
_PERSIST_OBJECTS = 512  # tensor objects per metadata context


def aligned(nbytes: int, align: int = 64) -> np.ndarray:
    """Zeroed uint8 array of ``nbytes`` whose data pointer is ``align``-aligned."""
    raw = np.zeros(nbytes + align, np.uint8)
    off = (-raw.ctypes.data) % align
    return raw[off : off + nbytes]


def weight_data(t: Any) -> tuple[tuple[int, ...], int, np.ndarray]:
    """(shape, ggml type, raw bytes) of a `TensorData` or array, validated."""
    name = getattr(t, "name", "array")
    if hasattr(t, "dtype") and isinstance(t.dtype, str) and hasattr(t, "data"):
        shape = check_shape(t.shape, f"weight {name}")
        dtype = t.dtype
        gtype = _ffi.TYPE_IDS.get(dtype)
        if gtype is None or (len(shape) != 2 and gtype != F32):
            # vectors, conv kernels and types ggml-cpu does not keep: dequantize to f32 here
            # (TensorData.numpy raises FormatError for a type it cannot read)
            return shape, F32, np.ascontiguousarray(t.numpy(), np.float32).reshape(shape)
        raw = np.asarray(t.data)
        if not raw.flags.c_contiguous:
            raw = np.ascontiguousarray(raw)
        blck, bsize = _ffi.TYPE_BLOCKS[gtype]
        if shape[-1] % blck:
            raise FormatError(
                f"weight {name}: row length {shape[-1]} is not a multiple of the {dtype} block size {blck}",
                "the file is damaged; convert or download it again",
            )
        want = prod(shape) // blck * bsize
        if raw.nbytes != want:
            raise FormatError(
                f"weight {name}: {dtype} {list(shape)} needs {want} bytes, has {raw.nbytes}",
                "the file is truncated or lies about the tensor",
            )
        return shape, gtype, raw.reshape(-1).view(np.uint8)
    arr = np.asarray(t)
    shape = check_shape(arr.shape, f"weight {name}")
    if arr.dtype == np.float16 and len(shape) == 2:
        return shape, _ffi.F16, np.ascontiguousarray(arr)
    if arr.dtype.kind not in "fiub":
        raise FormatError(
            f"weight {name}: cannot use an array of dtype {arr.dtype}",
            "convert the model again with ccsm convert",
        )
    return shape, F32, np.ascontiguousarray(arr, np.float32)


class PersistentMemory:
    """Owner of the backend's persistent tensors; hands out their ``ggml_tensor *``.

    ``count`` is how many tensors it made (a graph may reference each as a leaf);
    ``derived_bytes`` the bytes of derived weights that grow with a sequence length."""

    def __init__(self, g: Ggml, repack: bool, huge_pages: bool = False) -> None:
        """``repack``: make GGML's interleaved twins of Q4_0/Q4_K weights for matmul, where the
        CPU has kernels for them. ``huge_pages``: copy weights of `_huge_pages.MIN_BYTES` or more
        into huge pages unless NumPy put them there already, and ask for them for the twins,
        where the kernel provides them."""
        self._g, self._lib, self._ffi = g, g.lib, g.ffi
        self._ovh = g.tensor_overhead
        self._ctxs: list[Context] = []  # metadata
        self._pins: list[Any] = []  # the memory the tensors point at
        self._bufs: list[Owned] = []  # their ggml buffers
        self.count = 0
        self.derived_bytes = 0
        self._host: dict[int, np.ndarray] = {}  # weight tensor address -> its host bytes
        self._repacked: dict[int, Any] = {}  # weight tensor address -> its repacked twin
        self._derived: dict[Any, Any] = {}  # (weight address, what) -> derived weight
        self._rope_ff: dict[bytes, Any] = {}  # frequencies' bytes -> their factors
        self._zero_pool: tuple[Any, int] | None = None  # (tensor, elements), grown on demand
        self.repack_buffer_type = g.repack_buffer_type() if repack else None
        self.huge = _huge_pages.HugeArena() if huge_pages and _huge_pages.available() else None

    def close(self) -> None:
        """Free the ggml buffers and contexts and let go of the pinned memory."""
        for owned in [*self._bufs, *self._ctxs]:
            owned.close()
        self._pins.clear()

    def _context(self) -> Any:
        """A metadata context with room for one more tensor."""
        if not self._ctxs or self._lib.ggml_used_mem(self._ctxs[-1].handle) + self._ovh > self._ctxs[-1].mem_size:
            self._ctxs.append(Context(self._g, _PERSIST_OBJECTS * self._ovh))
        return self._ctxs[-1].handle

    def tensor(self, gtype: int, shape: tuple[int, ...], data: np.ndarray) -> Any:
        """A tensor whose data is ``data`` (aligned, contiguous; pinned here)."""
        lib, ffi = self._lib, self._ffi
        t = lib.ggml_new_tensor_4d(self._context(), gtype, *ne(shape))
        nbytes = lib.ggml_nbytes(t)
        if nbytes != data.nbytes:  # validated by callers; never hand ggml a short buffer
            raise FormatError(
                f"ggml-cpu: tensor of shape {list(shape)} needs {nbytes} bytes, got {data.nbytes}",
                "the file is truncated or damaged; convert or download it again",
            )
        ptr = ffi.cast("void *", data.ctypes.data)
        buf = lib.ggml_backend_cpu_buffer_from_ptr(ptr, nbytes)
        if buf == ffi.NULL:
            raise GgmlError("ggml_backend_cpu_buffer_from_ptr failed", "free some memory, or use --backend numpy")
        self._bufs.append(Owned(buf, lib.ggml_backend_buffer_free))
        check_status(self._g, lib.ggml_backend_tensor_alloc(buf, t, ptr), "ggml_backend_tensor_alloc")
        self._pins.append(data)
        self.count += 1
        return t

    def buffer(self, gtype: int, shape: tuple[int, ...], item: int) -> Any:
        """A zeroed tensor of ``item``-byte elements (a ``zeros`` buffer)."""
        return self.tensor(gtype, shape, aligned(prod(shape) * item))

    def weight(self, t: Any) -> tuple[Any, tuple[int, ...], int]:
        """(tensor, shape, ggml type) of a `TensorData` or array; its data is used in place when
        aligned and contiguous, else copied."""
        shape, gtype, data = weight_data(t)
        huge = self.huge is not None and data.nbytes >= _huge_pages.MIN_BYTES and not _huge_pages.numpy_backs(data)
        if huge or data.ctypes.data % _ffi.TENSOR_ALIGNMENT or not data.flags.c_contiguous:
            copy = self.huge.take(data.nbytes) if self.huge is not None and huge else aligned(data.nbytes)
            copy[:] = data.reshape(-1).view(np.uint8)
            _huge_pages.release(data)
            data = copy
        ptr = self.tensor(gtype, shape, data)
        self._host[int(self._ffi.cast("uintptr_t", ptr))] = data
        return ptr, shape, gtype

    # -- made from weights, once ---------------------------------------------------------
    def derived(self, w: Any, key: Any, make: Callable[[np.ndarray], np.ndarray]) -> Any:
        """A weight computed once from weight tensor ``w``'s float32 values (e.g. re-laid out)."""
        k = (int(self._ffi.cast("uintptr_t", w)), key)
        got = self._derived.get(k)
        if got is None:
            host = self._host[k[0]].reshape(-1).view(np.float32)
            got = self._derived[k] = self.weight(make(host))[0]
        return got

    def derived_within(
        self, w: Any, key: Any, nbytes: int, budget: int, make: Callable[[np.ndarray], np.ndarray]
    ) -> Any | None:
        """`derived` for data that grows with a sequence length: None once such data would pass
        ``budget`` bytes in all."""
        if (int(self._ffi.cast("uintptr_t", w)), key) not in self._derived:
            if self.derived_bytes + nbytes > budget:
                return None
            self.derived_bytes += nbytes
        return self.derived(w, key, make)

    def zeros_view(self, ctx: Any, n: int) -> Any:
        """A view in ``ctx`` of ``n`` float32 zeros (of a shared pool, grown on demand)."""
        pool = self._zero_pool
        if pool is None or pool[1] < n:
            size = max(n, 1 << 16 if pool is None else 2 * pool[1])
            pool = self._zero_pool = (self.buffer(F32, (size,), 4), size)
        return self._lib.ggml_view_4d(ctx, pool[0], n, 1, 1, 1, 4 * n, 4 * n, 4 * n, 0)

    def known_freq_factors(self, key: bytes) -> Any | None:
        """The factors made earlier for frequencies whose float32 bytes are ``key``, if any."""
        return self._rope_ff.get(key)

    def freq_factors(self, freqs: np.ndarray) -> Any:
        """Persistent 1/freqs, so that ggml's angle pos * base^0 / factor equals pos * freqs."""
        key = freqs.tobytes()
        ff = self._rope_ff.get(key)
        if ff is None:
            with np.errstate(divide="ignore"):
                inv = (1.0 / freqs.astype(np.float64)).astype(np.float32)
            data = aligned(inv.nbytes)
            data[:] = inv.view(np.uint8)
            ff = self._rope_ff[key] = self.tensor(F32, inv.shape, data)
        return ff

    # -- repacked twins ------------------------------------------------------------------
    @property
    def repacked_count(self) -> int:
        """How many weights have a repacked twin."""
        return len(self._repacked)

    def repacks(self, w: GTensor) -> bool:
        """Whether products with weight ``w`` go through its repacked twin."""
        return not (
            self.repack_buffer_type is None
            or w.kind != WEIGHT
            or len(w.shape) != 2
            or w.shape[0] % _ffi.REPACK_ROWS
            or _ffi.TYPE_NAMES.get(w.type) not in _ffi.REPACK_TYPES
        )

    def matmul_weight(self, w: GTensor, p: Any) -> Any:
        """Tensor ``p`` of weight handle ``w`` for a matmul: its repacked twin where GGML has
        faster kernels for it, else ``p``.

        The twin is made on first use, so a table that is also read by ``embedding`` (tied
        output heads) keeps its plain copy for that."""
        if not self.repacks(w):
            return p
        key = int(self._ffi.cast("uintptr_t", p))
        twin = self._repacked.get(key)
        if twin is None:
            lib, buft = self._lib, self.repack_buffer_type
            data = self._host[key]
            twin = lib.ggml_new_tensor_4d(self._context(), w.type, *ne(w.shape))
            size = lib.ggml_backend_buft_get_alloc_size(buft, twin)
            buf = lib.ggml_backend_buft_alloc_buffer(buft, size)
            if buf == self._ffi.NULL:
                raise GgmlError("allocating a repacked weight failed", "free some memory or pass repack=False")
            self._bufs.append(Owned(buf, lib.ggml_backend_buffer_free))
            if self.huge is not None:  # before the twin is written
                base = int(self._ffi.cast("uintptr_t", lib.ggml_backend_buffer_get_base(buf)))
                _huge_pages.advise(base, size)
            check_status(
                self._g,
                lib.ggml_backend_tensor_alloc(buf, twin, lib.ggml_backend_buffer_get_base(buf)),
                "ggml_backend_tensor_alloc",
            )
            lib.ggml_backend_tensor_set(twin, self._ffi.cast("void *", data.ctypes.data), 0, data.nbytes)
            self._repacked[key] = twin
        return twin
