"""Validated, memory-mapped safetensors reading (and writing, for tests and conversion)."""

from __future__ import annotations

import json
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ..errors import FormatError
from ..tensors import PLAIN_DTYPES, TensorData, WeightSource

_ITEMSIZE = {"F32": 4, "F16": 2, "BF16": 2, "F64": 8, "I8": 1, "I16": 2, "I32": 4, "I64": 8, "U8": 1, "BOOL": 1}
_MAX_HEADER = 100 * 1024 * 1024


def sniff(first_bytes: bytes) -> bool:
    """A safetensors file starts with a little-endian header length and ``{``."""
    return len(first_bytes) >= 9 and first_bytes[8:9] == b"{"


def load_safetensors(path: str | Path, *, validate: bool = True) -> WeightSource:
    """Open ``path`` lazily; every tensor's dtype, shape and byte range is checked first."""
    path = Path(path)
    hint = "the file is truncated or not a safetensors file; download or convert it again"
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise FormatError(f"{path}: file too short for a safetensors header", hint)
            (n,) = struct.unpack("<Q", head)
            if n < 2 or n > _MAX_HEADER or 8 + n > size:
                raise FormatError(f"{path}: header length {n} does not fit the file ({size} bytes)", hint)
            header = json.loads(f.read(n).decode("utf-8"))
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file", "check the model path") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FormatError(f"{path}: header is not valid JSON ({e})", hint) from None
    if not isinstance(header, dict):
        raise FormatError(f"{path}: header is not a JSON object", hint)
    metadata = header.pop("__metadata__", {}) or {}
    base = 8 + n
    data_size = size - base
    mm = (
        np.memmap(path, dtype=np.uint8, mode="r", offset=base, shape=(data_size,))
        if data_size
        else np.zeros(0, np.uint8)
    )
    tensors: dict[str, TensorData] = {}
    for name, info in header.items():
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(d) for d in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: tensor {name!r} has a malformed header entry", hint) from None
        if dtype not in _ITEMSIZE:
            raise FormatError(
                f"{path}: tensor {name!r} has unsupported dtype {dtype}", "supported: " + ", ".join(_ITEMSIZE)
            )
        if any(d < 0 for d in shape) or not (0 <= start <= end <= data_size):
            raise FormatError(
                f"{path}: tensor {name!r} lies outside the file (bytes {start}..{end} of {data_size})", hint
            )
        count = int(np.prod(shape, dtype=np.int64))
        if count * _ITEMSIZE[dtype] != end - start:
            raise FormatError(
                f"{path}: tensor {name!r} shape {list(shape)} does not match its {end - start} bytes", hint
            )
        raw = mm[start:end]
        data = raw.view(np.uint16) if dtype == "BF16" else raw.view(PLAIN_DTYPES[dtype])
        tensors[name] = TensorData(name, shape, dtype, data)
    return WeightSource(path, tensors, dict(metadata), "safetensors")


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
