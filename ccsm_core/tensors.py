"""Format-neutral lazy tensors and weight sources."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import FormatError

# element types stored as plain NumPy arrays
PLAIN_DTYPES = {
    "F32": np.float32,
    "F16": np.float16,
    "F64": np.float64,
    "I8": np.int8,
    "I16": np.int16,
    "I32": np.int32,
    "I64": np.int64,
    "U8": np.uint8,
    "BOOL": np.bool_,
}


def bf16_to_f32(raw: np.ndarray) -> np.ndarray:
    """bfloat16 bits (uint16) -> float32."""
    return (raw.astype(np.uint32) << 16).view(np.float32)


def f32_to_bf16(x: np.ndarray) -> np.ndarray:
    """float32 -> bfloat16 bits (uint16), round to nearest even."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    return (rounded >> 16).astype(np.uint16)


@dataclass(frozen=True)
class TensorData:
    """One stored tensor, not yet converted.

    ``shape`` is the logical NumPy (row-major) shape, e.g. ``[out, in]`` for a Linear weight.
    ``dtype`` is a GGML type name (``F32``, ``F16``, ``BF16``, ``Q8_0``, ``Q4_K``...).
    ``data`` is the raw storage, usually a view of a memory-mapped file: a typed array for plain
    types, ``uint16`` bits for ``BF16``, ``uint8`` blocks for quantized types.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    data: np.ndarray

    @property
    def quantized(self) -> bool:
        return self.dtype not in PLAIN_DTYPES and self.dtype != "BF16"

    def numpy(self) -> np.ndarray:
        """The values as float32 (dequantized), in ``shape``."""
        if self.dtype in PLAIN_DTYPES:
            return np.asarray(self.data).astype(np.float32).reshape(self.shape)
        if self.dtype == "BF16":
            return bf16_to_f32(np.asarray(self.data).view(np.uint16)).reshape(self.shape)
        try:
            import gguf
            from gguf import quants

            qtype = gguf.GGMLQuantizationType[self.dtype]
            out = quants.dequantize(np.asarray(self.data, dtype=np.uint8), qtype)
        except (KeyError, NotImplementedError, ValueError) as e:
            raise FormatError(
                f"tensor {self.name}: cannot dequantize type {self.dtype}: {e}",
                "convert the file to a supported type with `ccsm convert`",
            ) from e
        return np.asarray(out, dtype=np.float32).reshape(self.shape)


def float32_values(t: Any) -> np.ndarray:
    """A stored tensor (`TensorData`, dequantized) or an array, as contiguous float32 values."""
    return np.ascontiguousarray(t.numpy() if isinstance(t, TensorData) else t, dtype=np.float32)


def take_rows(t: Any, start: int, stop: int) -> Any:
    """Rows ``start:stop`` of a 2-D stored weight, without dequantizing (quant blocks run along rows)."""
    if isinstance(t, TensorData):
        raw = np.asarray(t.data).reshape(t.shape[0], -1)[start:stop]
        return TensorData(
            f"{t.name}[{start}:{stop}]", (stop - start, *t.shape[1:]), t.dtype, raw.reshape(-1) if t.quantized else raw
        )
    return np.asarray(t)[start:stop]


def _span(arrays: Sequence[np.ndarray]) -> np.ndarray | None:
    """Arrays that lie back to back in one buffer (a memory-mapped file) as one uint8 view of
    that buffer, else None."""
    owners: list[Any] = []
    for a in arrays:
        o: Any = a
        while isinstance(o, np.ndarray) and o.base is not None:
            o = o.base
        owners.append(o.obj if isinstance(o, memoryview) else o)
    if (
        isinstance(owners[0], np.ndarray)
        or any(o is not owners[0] for o in owners)
        or not all(a.flags.c_contiguous for a in arrays)
    ):
        return None
    ptrs = [a.__array_interface__["data"][0] for a in arrays]
    if any(p + a.nbytes != q for a, p, q in zip(arrays, ptrs, ptrs[1:])):
        return None
    try:
        whole = np.frombuffer(owners[0], np.uint8)
    except (TypeError, ValueError):
        return None
    start = ptrs[0] - whole.ctypes.data
    total = sum(a.nbytes for a in arrays)
    return whole[start : start + total] if 0 <= start and start + total <= whole.nbytes else None


def stack_rows(name: str, parts: Sequence[Any]) -> Any | None:
    """2-D stored weights of one type and row length stacked along rows (a fused projection:
    each output row is still computed alone, so results are unchanged), or None when they differ
    in type or width. Parts stored back to back in a memory-mapped file become one view of it
    (no copy); others are copied."""
    if not parts or any(len(p.shape) != 2 or p.shape[1] != parts[0].shape[1] for p in parts):
        return None
    if all(isinstance(p, TensorData) for p in parts):
        dtype = parts[0].dtype
        if any(p.dtype != dtype for p in parts):
            return None
        raws = [np.asarray(p.data).reshape(p.shape[0], -1) for p in parts]
        if any(r.shape[1] != raws[0].shape[1] for r in raws):
            return None
        rows = sum(r.shape[0] for r in raws)
        span = _span([np.asarray(p.data) for p in parts])
        if span is not None:
            raw = span if parts[0].quantized else span.view(raws[0].dtype).reshape(rows, -1)
        else:
            raw = np.concatenate(raws)
            raw = raw.reshape(-1) if parts[0].quantized else raw
        return TensorData(name, (rows, parts[0].shape[1]), dtype, raw)
    if any(isinstance(p, TensorData) for p in parts):
        return None
    arrays = [np.asarray(p) for p in parts]
    if any(a.dtype != arrays[0].dtype for a in arrays):
        return None
    return np.concatenate(arrays)


@dataclass
class WeightSource(Mapping[str, TensorData]):
    """The tensors and metadata of one weight file, read lazily."""

    path: Path
    tensors: dict[str, TensorData]
    metadata: dict[str, Any] = field(default_factory=dict)
    format: str = ""

    def __getitem__(self, name: str) -> TensorData:
        try:
            return self.tensors[name]
        except KeyError:
            raise FormatError(
                f"{self.path}: tensor {name!r} is missing", "the file is incomplete or not the model it claims to be"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)
