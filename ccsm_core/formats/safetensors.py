"""Validated, memory-mapped safetensors reading (and writing, for tests and conversion).

The header is checked as a schema before any tensor is mapped: its length is bounded and within
the file, it is bounded JSON (`limits.loads_json`), every entry has a known ``dtype`` string, a
shape of non-negative counts whose byte size matches its ``data_offsets``, an integer pair
within the data; the tensors do not overlap and together cover the data exactly (as the
safetensors library requires); ``__metadata__`` is an object of strings.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ..limits import loads_json, regular_file
from ..schema import MAX_COUNT
from ..tensors import PLAIN_DTYPES, TensorData, WeightSource

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "U8": 1, "BOOL": 1}
MAX_HEADER = 100 * 1024 * 1024  # bytes of JSON header (the safetensors library's own limit)
MAX_DIMS = 8  # dimensions of one tensor
_HINT = "the file is truncated or not a safetensors file; download or convert it again"


def sniff(first_bytes: bytes) -> bool:
    """A safetensors file starts with a little-endian header length and ``{``."""
    return len(first_bytes) >= 9 and first_bytes[8:9] == b"{"


def read_header(path: Path) -> tuple[dict[str, Any], int, int]:
    """The header object of ``path``, the offset where its data starts and the file's size."""
    regular_file(path, "weights file")
    try:
        with open(path, "rb") as f:
            size = path.stat().st_size
            head = f.read(8)
            if len(head) < 8:
                raise FormatError(f"{path}: file too short for a safetensors header", _HINT)
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > MAX_HEADER or 8 + n > size:
                raise FormatError(f"{path}: header length {n} does not fit the file ({size} bytes)", _HINT)
            raw = f.read(n)
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file", "check the model path") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})", "check the file's permissions") from None
    header = loads_json(raw, f"{path}: header", _HINT)
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header is not a JSON object", _HINT)
    return header, 8 + n, size


def check_metadata(value: Any, where: str) -> dict[str, str]:
    """``__metadata__``: absent, null or an object of string values."""
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise FormatError(f"{where}: __metadata__ is not an object of strings", _HINT)
    return dict(value)


def check_entry(name: str, info: Any, data_size: int, where: str) -> tuple[str, tuple[int, ...], int, int]:
    """One tensor's ``(dtype, shape, start, end)``, every field checked against the data size."""
    what = f"{where}: tensor {_quoted(name)}"
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= set(info):
        raise FormatError(f"{what} has a malformed header entry", _HINT)
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if not isinstance(dtype, str) or dtype not in _ITEMSIZE:
        shown = dtype if isinstance(dtype, str) and len(dtype) <= 16 else type(dtype).__name__
        raise FormatError(f"{what} has unsupported dtype {shown}", "supported: " + ", ".join(_ITEMSIZE))
    high = max(data_size, MAX_COUNT)  # a dimension beside a zero one may exceed the data
    if not isinstance(shape, list) or len(shape) > MAX_DIMS or not all(_is_count(d, high) for d in shape):
        raise FormatError(f"{what} has a malformed shape (not {MAX_DIMS} or fewer counts)", _HINT)
    if not isinstance(offsets, list) or len(offsets) != 2 or not all(_is_count(o, data_size) for o in offsets):
        raise FormatError(f"{what} lies outside the file (data_offsets not two integers in 0..{data_size})", _HINT)
    start, end = offsets
    if start > end:
        raise FormatError(f"{what} ends before it starts (bytes {start}..{end})", _HINT)
    nbytes = 0 if 0 in shape else _ITEMSIZE[dtype]
    for d in shape:  # each factor is bounded: stop once past the data, the int stays small
        nbytes *= d
        if nbytes > data_size:
            break
    if nbytes != end - start:
        raise FormatError(f"{what} shape {shape} does not match its {end - start} bytes", _HINT)
    return dtype, tuple(shape), start, end


def _quoted(name: str) -> str:
    """A tensor name for a message (a file may give a name of any length)."""
    return repr(name) if len(name) <= 80 else repr(name[:77]) + "..."


def _is_count(value: Any, high: int) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= high


def check_layout(spans: list[tuple[int, int, str]], data_size: int, where: str) -> None:
    """The tensors' byte ranges neither overlap nor leave gaps, and end with the data."""
    at = 0
    for start, end, name in sorted(spans):
        if start < at:
            raise FormatError(f"{where}: tensor {_quoted(name)} overlaps another (bytes {start}..{end})", _HINT)
        if start > at:
            raise FormatError(f"{where}: bytes {at}..{start} of the data belong to no tensor", _HINT)
        at = end
    if at != data_size:
        raise FormatError(f"{where}: the tensors cover {at} of the {data_size} data bytes", _HINT)


def load_safetensors(path: str | Path, *, validate: bool = True) -> WeightSource:
    """Open ``path`` lazily; the whole header is checked (see the module) before anything is mapped."""
    path = Path(path)
    where = str(path)
    header, base, size = read_header(path)
    metadata = check_metadata(header.pop("__metadata__", None), where)
    data_size = size - base
    entries = {name: check_entry(name, info, data_size, where) for name, info in header.items()}
    check_layout([(s, e, name) for name, (_, _, s, e) in entries.items()], data_size, where)
    mm = (
        np.memmap(path, dtype=np.uint8, mode="r", offset=base, shape=(data_size,))
        if data_size
        else np.zeros(0, np.uint8)
    )
    tensors: dict[str, TensorData] = {}
    for name, (dtype, shape, start, end) in entries.items():
        raw = mm[start:end]
        data = raw.view(np.uint16) if dtype == "BF16" else raw.view(PLAIN_DTYPES[dtype])
        tensors[name] = TensorData(name, shape, dtype, data)
    return WeightSource(path, tensors, metadata, "safetensors")


def save_safetensors(
    path: str | Path, tensors: Mapping[str, np.ndarray | TensorData], metadata: Mapping[str, str] | None = None
) -> None:
    """Write float32/float16/int arrays (or `TensorData` of plain types and BF16) as a safetensors
    file (sorted names, packed)."""
    rev = {np.dtype(v): k for k, v in PLAIN_DTYPES.items()}
    header: dict[str, object] = {"__metadata__": dict(metadata)} if metadata else {}
    offset, blobs = 0, []
    for name in sorted(tensors):
        value = tensors[name]
        if isinstance(value, TensorData):  # stored as its type (BF16: uint16 bits)
            arr, dtype, shape = np.ascontiguousarray(value.data), value.dtype, list(value.shape)
        else:
            arr = np.ascontiguousarray(value)
            dtype, shape = rev[arr.dtype], list(arr.shape)
        blob = arr.tobytes()
        header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)
