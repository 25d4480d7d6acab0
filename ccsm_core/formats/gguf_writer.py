"""GGUF files, written: tensors encoded (plain or quantized) and metadata typed for ``gguf.GGUFWriter``."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import BUG_HINT, UsageError
from ..files import atomic_path
from ..tensors import PLAIN_DTYPES, TensorData, f32_to_bf16
from .gguf_reader import NP_SCALARS

TensorInput = np.ndarray | TensorData | tuple  # values, TensorData, or (raw, shape, ggml type)

_PLAIN_GGML = ("F32", "F16", "F64", "I8", "I16", "I32", "I64")
_QUANTIZABLE = ("F32", "F16", "BF16", "Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def encode_tensor(values: np.ndarray, dtype: str) -> np.ndarray:
    """Float values -> raw storage of GGML type ``dtype`` (F32, F16, BF16, Q8_0, Q4_0, ...).

    Quantized results are ``uint8`` with the last dimension in bytes; raises ``UsageError`` when
    the type is not supported or the row length is not a multiple of the type's block size.
    """
    import gguf
    from gguf import quants

    x = np.ascontiguousarray(values, dtype=np.float32)
    if dtype == "F32":
        return x
    if dtype == "F16":
        return x.astype(np.float16)
    if dtype == "BF16":
        return f32_to_bf16(x)
    if dtype not in _QUANTIZABLE:
        raise UsageError(f"cannot quantize to {dtype}", f"choose one of {', '.join(_QUANTIZABLE)}")
    qtype = gguf.GGMLQuantizationType[dtype]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if x.ndim == 0 or x.shape[-1] % block:
        raise UsageError(
            f"cannot quantize a tensor of shape {x.shape} to {dtype}: rows must be a multiple of {block} values",
            "keep this tensor in F16 or F32",
        )
    return quants.quantize(x, qtype)


def _tensor_for_writer(name: str, value: TensorInput) -> tuple[np.ndarray, Any]:
    """(array, raw_dtype or None) as ``GGUFWriter.add_tensor`` wants them."""
    import gguf
    from gguf.quants import quant_shape_to_byte_shape

    if isinstance(value, TensorData):
        value = (value.data, value.dtype, value.shape)
    if isinstance(value, np.ndarray):
        if value.dtype not in {np.dtype(PLAIN_DTYPES[t]) for t in _PLAIN_GGML}:
            raise UsageError(
                f"tensor {name!r}: NumPy dtype {value.dtype} has no GGUF type",
                "pass (array, 'F32') or another GGML type name",
            )
        return np.ascontiguousarray(value), None
    if not isinstance(value, tuple) or len(value) not in (2, 3):
        raise UsageError(
            f"tensor {name!r}: expected an array, (array, dtype) or (raw, dtype, shape)", "see write_gguf's docstring"
        )
    if len(value) == 2:
        arr, dtype = value
        raw, shape = encode_tensor(np.asarray(arr), dtype), tuple(np.shape(arr))
    else:
        raw, dtype, shape = value
        raw = np.frombuffer(raw, dtype=np.uint8) if isinstance(raw, (bytes, bytearray)) else raw
        shape = tuple(int(d) for d in shape)
    if dtype in _PLAIN_GGML:
        arr = np.ascontiguousarray(raw).reshape(-1).view(PLAIN_DTYPES[dtype])
        if arr.size != int(np.prod(shape)):
            raise UsageError(
                f"tensor {name!r}: {arr.size} values of {dtype} do not match shape {shape}",
                "pass raw data of exactly that shape",
            )
        return arr.reshape(shape), None
    try:
        qtype = gguf.GGMLQuantizationType[dtype]
        byte_shape = quant_shape_to_byte_shape(shape or (1,), qtype)
    except (KeyError, ValueError) as e:
        raise UsageError(
            f"tensor {name!r}: cannot store shape {shape} as {dtype} ({e})",
            "use a GGML type name such as F16, Q8_0 or Q4_0",
        ) from None
    data = np.ascontiguousarray(raw).view(np.uint8)
    if data.size != int(np.prod(byte_shape)):
        raise UsageError(
            f"tensor {name!r}: {data.size} bytes of {dtype} data do not match shape {shape}",
            "pass the raw blocks of exactly that shape",
        )
    return data.reshape(byte_shape), qtype


def _value_type(key: str, value: Any) -> tuple[Any, Any, Any]:
    """(value, GGUFValueType, array sub type) for a Python/NumPy metadata value."""
    from gguf import GGUFValueType as T

    if isinstance(value, tuple) and len(value) in (2, 3) and isinstance(value[1], T):
        return value[0], value[1], value[2] if len(value) == 3 else None
    if isinstance(value, (bool, np.bool_)):
        return bool(value), T.BOOL, None
    if isinstance(value, np.generic) and not isinstance(value, np.str_):
        return value.item(), _np_vt(key, np.dtype(value.dtype)), None
    if isinstance(value, int):
        for vt, lo, hi in (
            (T.UINT32, 0, 2**32),
            (T.INT32, -(2**31), 2**31),
            (T.UINT64, 0, 2**64),
            (T.INT64, -(2**63), 2**63),
        ):
            if lo <= value < hi:
                return value, vt, None
        raise UsageError(f"metadata {key!r}: integer {value} does not fit 64 bits", "store it as a string")
    if isinstance(value, float):
        return value, T.FLOAT32, None
    if isinstance(value, str):
        return value, T.STRING, None
    if isinstance(value, np.ndarray):
        return value, T.ARRAY, _np_vt(key, value.dtype)
    if isinstance(value, (list, tuple)):
        items = list(value)
        if all(isinstance(v, str) for v in items):
            return items, T.ARRAY, T.STRING
        if all(isinstance(v, (bool, np.bool_)) for v in items):
            return items, T.ARRAY, T.BOOL
        if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in items):
            sub = T.INT32 if all(-(2**31) <= v < 2**31 for v in items) else T.INT64
            return items, T.ARRAY, sub
        if all(isinstance(v, (int, float, np.number)) for v in items):
            return items, T.ARRAY, T.FLOAT32
        if all(isinstance(v, (list, tuple, np.ndarray)) for v in items) and items:
            return items, T.ARRAY, T.ARRAY
    raise UsageError(
        f"metadata {key!r}: cannot store a {type(value).__name__} in GGUF",
        "use str, int, float, bool, lists of those, or a NumPy array",
    )


# NumPy dtype.char -> GGUF value type id
_NP_VT_IDS = {
    "B": 0,
    "b": 1,
    "H": 2,
    "h": 3,
    "I": 4,
    "i": 5,
    "f": 6,
    "?": 7,
    "L": 10,
    "Q": 10,
    "l": 11,
    "q": 11,
    "d": 12,
}


def _np_vt(key: str, dt: np.dtype) -> Any:
    from gguf import GGUFValueType

    if dt.char not in _NP_VT_IDS:
        raise UsageError(
            f"metadata {key!r}: NumPy dtype {dt} has no GGUF type",
            "convert it to int32, float32 or another fixed-size type",
        )
    return GGUFValueType(_NP_VT_IDS[dt.char])


def _writer_class() -> type:
    """``GGUFWriter`` that also packs empty arrays and NumPy arrays (fast) when the type is known."""
    import gguf
    from gguf import GGUFValueType as T

    class _Writer(gguf.GGUFWriter):
        def _pack_val(self, val: Any, vtype: Any, add_vtype: bool, sub_type: Any = None) -> bytes:
            if vtype == T.STRING and isinstance(val, str):  # keep undecodable bytes as read
                val = val.encode("utf-8", "surrogateescape")
            if vtype != T.ARRAY or sub_type is None:
                return super()._pack_val(val, vtype, add_vtype, sub_type)
            out = bytearray(struct.pack("<I", vtype) if add_vtype else b"")
            out += struct.pack("<IQ", sub_type, len(val))
            if sub_type in NP_SCALARS or sub_type == T.BOOL:
                np_t = np.bool_ if sub_type == T.BOOL else NP_SCALARS[int(sub_type)]
                out += np.asarray(val, dtype=np_t).astype(np.dtype(np_t).newbyteorder("<")).tobytes()
            else:
                for item in val:
                    v, vt, st = _value_type("array element", item) if sub_type == T.ARRAY else (item, sub_type, None)
                    out += self._pack_val(v, vt, add_vtype=False, sub_type=st)
            return bytes(out)

    return _Writer


def write_gguf(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    tensors: Mapping[str, TensorInput],
    arch: str,
    *,
    alignment: int | None = None,
) -> Path:
    """Write a GGUF v3 file (atomically: a temporary file renamed into place).

    ``metadata`` values: ``str``, ``bool``, ``int`` (stored as u32 when it fits, else i32/u64/i64),
    ``float`` (f32), lists of those (string / i32 / f32 arrays), NumPy arrays (typed arrays), or an
    explicit ``(value, gguf.GGUFValueType[, sub_type])``. ``general.architecture`` is ``arch``.

    ``tensors`` values (NumPy shapes, row-major): a NumPy array stored in its own dtype (f32, f16,
    f64, i8..i64); ``(values, "Q8_0")`` to convert float values to a GGML type (F32, F16, BF16,
    Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) with ``gguf.quants``; ``(raw, "Q4_K", shape)`` for data already
    in that type's storage; or a :class:`TensorData`.
    """
    path = Path(path)
    md = dict(metadata)
    if md.get("general.architecture", arch) != arch:
        raise UsageError(
            f"metadata says architecture {md['general.architecture']!r} but arch={arch!r}", "pass one architecture"
        )
    md.pop("general.architecture", None)
    with atomic_path(path) as tmp:
        writer = _writer_class()(tmp, arch)
        if alignment is not None:
            if alignment <= 0 or alignment & (alignment - 1):
                raise UsageError(f"alignment {alignment} is not a power of two", "use 32 or 64")
            writer.data_alignment = alignment
            from gguf import GGUFValueType

            md["general.alignment"] = (alignment, GGUFValueType.UINT32)
        for key, value in md.items():
            v, vt, st = _value_type(key, value)
            writer.add_key_value(key, v, vt, sub_type=st)
        for name, value in tensors.items():
            arr, raw_dtype = _tensor_for_writer(name, value)
            writer.add_tensor(name, arr, raw_dtype=raw_dtype)
        try:
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_tensors_to_file()
        finally:
            writer.close()
    return path


@dataclass(frozen=True)
class PlannedTensor:
    """A tensor to write: its name, NumPy shape and GGML type, and how to compute its values
    (an array or `TensorData`), called only when its turn to be written comes."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    make: Callable[[], Any]


def _encoded(t: PlannedTensor) -> np.ndarray:
    """The planned tensor's raw storage in its type (``encode_tensor``; Q4_K by `q4_k`)."""
    value = t.make()
    if isinstance(value, TensorData):
        if value.dtype == t.dtype and tuple(value.shape) == t.shape:
            return np.ascontiguousarray(value.data)
        value = value.numpy()
    values = np.asarray(value, np.float32)
    if tuple(values.shape) != t.shape:
        raise UsageError(f"tensor {t.name!r}: computed shape {list(values.shape)}, planned {list(t.shape)}", BUG_HINT)
    if t.dtype == "Q4_K":
        from .q4_k import quantize_q4_k

        return quantize_q4_k(values)
    return encode_tensor(values, t.dtype)


def _nbytes(t: PlannedTensor) -> int:
    import gguf

    count = int(np.prod(t.shape, dtype=np.int64))
    if t.dtype in _PLAIN_GGML:
        return count * np.dtype(PLAIN_DTYPES[t.dtype]).itemsize
    if t.dtype == "BF16":
        return count * 2
    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[t.dtype]]
    if not t.shape or t.shape[-1] % block:
        raise UsageError(
            f"tensor {t.name!r} of shape {list(t.shape)} cannot be stored as {t.dtype}",
            "choose another --type (its rows must be a whole number of the type's blocks), e.g. f16",
        )
    return count // block * size


def write_gguf_stream(
    path: str | os.PathLike[str],
    metadata: Mapping[str, Any],
    arch: str,
    tensors: Sequence[PlannedTensor],
    *,
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write a GGUF v3 file one tensor at a time: the header from the plan, then each tensor
    computed, encoded and written before the next is made, so memory stays near one tensor.
    Atomic like `write_gguf`; ``progress(name)`` is called after each tensor."""
    import gguf

    path = Path(path)
    md = {k: v for k, v in metadata.items() if k != "general.architecture"}
    with atomic_path(path) as tmp:
        writer = _writer_class()(tmp, arch)
        try:
            for key, value in md.items():
                v, vt, st = _value_type(key, value)
                writer.add_key_value(key, v, vt, sub_type=st)
            for t in tensors:
                if t.dtype in _PLAIN_GGML:
                    writer.add_tensor_info(t.name, t.shape, np.dtype(PLAIN_DTYPES[t.dtype]), _nbytes(t))
                else:
                    qtype = gguf.GGMLQuantizationType[t.dtype]
                    writer.add_tensor_info(t.name, t.shape, np.dtype(np.float32), _nbytes(t), raw_dtype=qtype)
            writer.write_header_to_file()
            writer.write_kv_data_to_file()
            writer.write_ti_data_to_file()
            for t in tensors:
                raw = _encoded(t)
                if raw.nbytes != _nbytes(t):
                    raise UsageError(f"tensor {t.name!r}: {raw.nbytes} bytes encoded, {_nbytes(t)} planned", BUG_HINT)
                writer.write_tensor_data(raw)
                del raw
                if progress is not None:
                    progress(t.name)
        finally:
            writer.close()
    return path


__all__ = ["PlannedTensor", "encode_tensor", "write_gguf", "write_gguf_stream"]
