"""An ONNX file's initializers as lazy `TensorData`: data inline (``raw_data``, ``float_data``,
``int32_data``) or in external data files beside the model, memory-mapped. Every dimension,
type, offset and length is checked against the file before any array is made."""

from __future__ import annotations

from collections.abc import Mapping
from math import prod
from pathlib import Path
from typing import Any

import numpy as np

from ccsm_core.errors import FormatError
from ccsm_core.tensors import TensorData

MAX_DIM = 1 << 31
MAX_ELEMENTS = 1 << 40
# ONNX TensorProto.DataType -> (ccsm type name, storage dtype); the float types a weight may have
FLOAT_TYPES: dict[int, tuple[str, Any]] = {
    1: ("F32", np.float32),
    10: ("F16", np.float16),
    11: ("F64", np.float64),
    16: ("BF16", np.uint16),
}
TYPE_NAMES = {1: "FLOAT", 2: "UINT8", 3: "INT8", 6: "INT32", 7: "INT64", 9: "BOOL", 10: "FLOAT16", 11: "DOUBLE"}
TYPE_NAMES |= {16: "BFLOAT16"}
EXTERNAL = 1  # TensorProto.EXTERNAL


class Initializers:
    """The initializers of one graph by name; each tensor is read (and checked) when asked for."""

    def __init__(self, path: Path, protos: Mapping[str, Any]) -> None:
        self.path = path
        self.protos = dict(protos)
        self._maps: dict[Path, np.ndarray] = {}

    def __contains__(self, name: object) -> bool:
        return name in self.protos

    def shape(self, name: str) -> tuple[int, ...]:
        """The checked dims of initializer ``name``."""
        return dims_of(self.protos[name], self.path)

    def is_float(self, name: str) -> bool:
        return int(self.protos[name].data_type) in FLOAT_TYPES

    def tensor(self, name: str) -> TensorData:
        """Initializer ``name`` as stored (ONNX layout), its data checked against its shape."""
        proto = self.protos[name]
        where = f"{self.path}: initializer {name!r}"
        code = int(proto.data_type)
        if code not in FLOAT_TYPES:
            kind = TYPE_NAMES.get(code, f"type {code}")
            raise FormatError(f"{where} holds {kind}, not a float weight", "weights must be float32, float16 or bf16")
        dtype_name, dtype = FLOAT_TYPES[code]
        shape = dims_of(proto, self.path)
        count = prod(shape)
        nbytes = count * np.dtype(dtype).itemsize
        if int(proto.data_location) == EXTERNAL:
            raw = self._external(proto, nbytes, where)
        elif proto.raw_data:
            if len(proto.raw_data) != nbytes:
                got = len(proto.raw_data)
                raise FormatError(f"{where}: {got} bytes for {list(shape)} {dtype_name}", "re-export it")
            raw = np.frombuffer(proto.raw_data, np.uint8)
        else:
            return TensorData(name, shape, dtype_name, _typed_fields(proto, code, count, where).reshape(shape))
        return TensorData(name, shape, dtype_name, raw.view(dtype).reshape(shape))

    def _external(self, proto: Any, nbytes: int, where: str) -> np.ndarray:
        """The bytes of an external-data tensor: a file beside the model, inside its folder."""
        info = {e.key: e.value for e in proto.external_data}
        location = info.get("location", "")
        folder = self.path.parent.resolve()
        target = (folder / location).resolve()
        if not location or Path(location).is_absolute() or folder not in target.parents:
            raise FormatError(f"{where}: external data {location!r} is not a file beside the model", "re-export it")
        if not target.is_file():
            raise FormatError(f"{where}: external data file {location} is missing", "copy it beside the model")
        offset = _int(info.get("offset", "0"), where, "offset")
        length = _int(info.get("length", str(nbytes)), where, "length")
        size = target.stat().st_size
        if length != nbytes or offset + length > size:
            raise FormatError(
                f"{where}: external data at offset {offset}, {length} bytes, in {location} of {size} bytes "
                f"(the tensor needs {nbytes})",
                "the data file is truncated or belongs to another export",
            )
        if target not in self._maps:
            self._maps[target] = np.memmap(target, np.uint8, mode="r")
        return self._maps[target][offset : offset + length]


def dims_of(proto: Any, path: Path) -> tuple[int, ...]:
    """An initializer's dims, each in 1..2**31 and at most 2**40 elements."""
    shape = tuple(int(d) for d in proto.dims)
    if any(not 0 < d <= MAX_DIM for d in shape) or prod(shape) > MAX_ELEMENTS:
        raise FormatError(f"{path}: initializer {proto.name!r} has dims {list(shape)}", "the file is damaged")
    return shape


def _int(text: str, where: str, what: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise FormatError(f"{where}: external data {what} {text!r} is not a byte count", "the file is damaged")
    return int(text)


def _typed_fields(proto: Any, code: int, count: int, where: str) -> np.ndarray:
    """Values kept in the typed fields (``float_data``; ``int32_data`` for 16-bit floats)."""
    field = {1: "float_data", 11: "double_data"}.get(code, "int32_data")
    values = getattr(proto, field)
    if len(values) != count:
        raise FormatError(f"{where}: {len(values)} values in {field} for {count} elements", "re-export it")
    if code in (1, 11):
        return np.asarray(values, FLOAT_TYPES[code][1])
    bits = np.asarray(values, np.int64)
    if bits.size and (bits.min() < 0 or bits.max() > 0xFFFF):
        raise FormatError(f"{where}: int32_data holds values beyond 16 bits", "the file is damaged")
    return bits.astype(np.uint16).view(FLOAT_TYPES[code][1])
