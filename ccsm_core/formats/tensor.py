"""Format-neutral lazy tensors and weight sources."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np

from ..errors import FormatError

# element types stored as plain NumPy arrays
PLAIN_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I8": np.int8,
                "I16": np.int16, "I32": np.int32, "I64": np.int64, "U8": np.uint8, "BOOL": np.bool_}


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
            raise FormatError(f"tensor {self.name}: cannot dequantize type {self.dtype}: {e}",
                              "convert the file to a supported type with `ccsm convert`") from e
        return np.asarray(out, dtype=np.float32).reshape(self.shape)


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
            raise FormatError(f"{self.path}: tensor {name!r} is missing",
                              "the file is incomplete or not the model it claims to be") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self.tensors)

    def __len__(self) -> int:
        return len(self.tensors)
