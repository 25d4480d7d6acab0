"""GGUF files, read: a validating reader of header and memory-mapped tensors.

Every byte of the header is bounds-checked before it is used, so a truncated or lying file is a
one-line :class:`FormatError`, never a crash, a hang or a huge allocation. Tensor data is not
copied: each :class:`TensorData` holds a NumPy view of the memory-mapped file.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, u32 version, u64 tensor count, u64 KV count,
the KV pairs, the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset), padding
to ``general.alignment`` (default 32), then the data section. ``ne`` is GGML order (fastest
dimension first); :class:`TensorData` shapes are NumPy order, i.e. ``ne`` reversed.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError
from ..tensors import PLAIN_DTYPES, TensorData, WeightSource

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 4  # arrays of arrays (rare); deeper is refused
BIG_ARRAY = 64  # numeric arrays longer than this stay NumPy arrays
MAX_ELEMENTS = 1 << 48  # an empty tensor's nonzero dimensions multiplied (others are bounded by the file)
_HEADER_SIZE = 24
_MIN_KV_SIZE = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_SIZE = 8 + 4 + 4 + 8  # name length, n_dims, type, offset

# GGUF value type ids -> (name, struct code or None for string/array, element size)
_SCALARS: dict[int, tuple[str, str, int]] = {
    0: ("UINT8", "B", 1),
    1: ("INT8", "b", 1),
    2: ("UINT16", "H", 2),
    3: ("INT16", "h", 2),
    4: ("UINT32", "I", 4),
    5: ("INT32", "i", 4),
    6: ("FLOAT32", "f", 4),
    7: ("BOOL", "B", 1),
    10: ("UINT64", "Q", 8),
    11: ("INT64", "q", 8),
    12: ("FLOAT64", "d", 8),
}
_STRING, _ARRAY = 8, 9
NP_SCALARS = {
    0: np.uint8,
    1: np.int8,
    2: np.uint16,
    3: np.int16,
    4: np.uint32,
    5: np.int32,
    6: np.float32,
    10: np.uint64,
    11: np.int64,
    12: np.float64,
}


def sniff(first_bytes: bytes) -> bool:
    """True if ``first_bytes`` (the start of a file) look like GGUF: the one magic check."""
    return bytes(first_bytes[:4]) == MAGIC


def gguf_version() -> str:
    """The installed ``gguf`` package version (it has no ``__version__``)."""
    try:
        from importlib.metadata import version

        return version("gguf")
    except Exception:  # pragma: no cover - metadata missing in odd installs
        return "unknown"


def _type_tables() -> tuple[dict[int, str], dict[int, tuple[int, int]]]:
    """GGML type id -> name, and id -> (block size, bytes per block), from the gguf package."""
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    names = {int(t): t.name for t in GGMLQuantizationType}
    sizes = {int(t): (int(b), int(s)) for t, (b, s) in GGML_QUANT_SIZES.items()}
    return {i: n for i, n in names.items() if i in sizes}, sizes


@dataclass(frozen=True)
class GGUFTensorInfo:
    """One tensor as the header describes it (validated)."""

    name: str
    ne: tuple[int, ...]  # GGML order: ne[0] is the contiguous (fastest) dimension
    type_id: int
    type_name: str  # GGML type name: "F32", "Q4_1", ...
    offset: int  # absolute byte offset in the file
    nbytes: int

    @property
    def shape(self) -> tuple[int, ...]:
        """NumPy (row-major) shape."""
        return tuple(reversed(self.ne))


@dataclass
class GGUFHeader:
    """Everything before the data section: version, metadata, tensor infos, layout."""

    path: Path
    version: int
    metadata: dict[str, Any]
    tensors: list[GGUFTensorInfo]
    alignment: int
    data_offset: int
    file_size: int
    value_types: dict[str, int] = field(default_factory=dict)  # key -> GGUF value type id


class _Cursor:
    """Bounds-checked little-endian reads from a buffer."""

    def __init__(self, buf: Any, size: int, path: Path) -> None:
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def fail(self, what: str) -> FormatError:
        return FormatError(
            f"{self.path}: not a valid GGUF file: {what}",
            "the file is truncated or corrupt; download or convert it again",
        )

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} at byte {self.pos} needs {n} bytes but the file has {self.size - self.pos} left")

    def unpack(self, code: str, what: str) -> Any:
        n = struct.calcsize("<" + code)
        self.need(n, what)
        (v,) = struct.unpack_from("<" + code, self.buf, self.pos)
        self.pos += n
        return v

    def string(self, what: str, errors: str = "surrogateescape") -> str:
        n = self.unpack("Q", f"{what} length")
        if n > self.size - self.pos:
            raise self.fail(f"{what} claims {n} bytes but only {self.size - self.pos} remain")
        raw = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        try:
            return raw.decode("utf-8", errors)
        except UnicodeDecodeError:
            raise self.fail(f"{what} is not valid UTF-8") from None


def _min_value_size(vtype: int) -> int:
    if vtype in _SCALARS:
        return _SCALARS[vtype][2]
    return 8 if vtype == _STRING else 12


def _read_value(cur: _Cursor, vtype: int, key: str, depth: int = 0) -> Any:
    """One metadata value of type ``vtype`` (strings decoded, big numeric arrays as NumPy)."""
    if vtype in _SCALARS:
        name, code, _ = _SCALARS[vtype]
        v = cur.unpack(code, f"value of {key!r}")
        return bool(v) if name == "BOOL" else v
    if vtype == _STRING:
        return cur.string(f"string value of {key!r}")
    if vtype != _ARRAY:
        raise cur.fail(f"key {key!r} has unknown value type {vtype}")
    if depth >= MAX_ARRAY_NESTING:
        raise cur.fail(f"key {key!r} nests arrays deeper than {MAX_ARRAY_NESTING}")
    etype = cur.unpack("I", f"array type of {key!r}")
    count = cur.unpack("Q", f"array length of {key!r}")
    if etype not in _SCALARS and etype not in (_STRING, _ARRAY):
        raise cur.fail(f"key {key!r} is an array of unknown value type {etype}")
    if count > (cur.size - cur.pos) // _min_value_size(etype):
        raise cur.fail(f"array {key!r} claims {count} elements, more than the file can hold")
    if etype in NP_SCALARS or etype == 7:
        size = _SCALARS[etype][2]
        raw = np.frombuffer(cur.buf, dtype=np.uint8, count=count * size, offset=cur.pos)
        cur.pos += count * size
        arr = raw.view(NP_SCALARS.get(etype, np.uint8)).copy()
        if etype == 7:
            arr = arr != 0
        return arr if count > BIG_ARRAY else arr.tolist()
    if etype == _STRING:
        return [cur.string(f"element {i} of {key!r}") for i in range(count)]
    return [_read_value(cur, _ARRAY, key, depth + 1) for _ in range(count)]


def read_header(path: str | os.PathLike[str], *, validate: bool = True) -> GGUFHeader:
    """Parse and validate the header of the GGUF file at ``path`` (no tensor data is read).

    Structural checks (bounds, counts, lengths, types, shapes, tensors inside the file) always
    run; ``validate=False`` skips only the layout checks that cannot crash (tensor offsets
    aligned, tensors not overlapping).
    """
    path = Path(path)
    mm, size = _open_mmap(path)
    return _parse_header(mm, size, path, validate)


def _parse_header(mm: Any, size: int, path: Path, validate: bool) -> GGUFHeader:
    cur = _Cursor(mm, size, path)
    if size < _HEADER_SIZE:
        if size >= 4 and not sniff(bytes(mm[:4])):
            raise _not_gguf(path, bytes(mm[:4]))
        raise cur.fail(f"{size} bytes is shorter than the {_HEADER_SIZE}-byte header")
    if not sniff(bytes(mm[:4])):
        raise _not_gguf(path, bytes(mm[:4]))
    cur.pos = 4
    version = cur.unpack("I", "version")
    if version not in SUPPORTED_VERSIONS:
        if version & 0xFFFF == 0:
            raise FormatError(
                f"{path}: big-endian GGUF files are not supported", "convert the model again on a little-endian machine"
            )
        raise FormatError(
            f"{path}: GGUF version {version} is not supported (only 2 and 3)",
            "convert the model again with a current llama.cpp or `ccsm convert`",
        )
    n_tensors = cur.unpack("Q", "tensor count")
    n_kv = cur.unpack("Q", "metadata count")
    room = size - cur.pos
    if (
        n_kv > room // _MIN_KV_SIZE
        or n_tensors > room // _MIN_TENSOR_INFO_SIZE
        or n_kv * _MIN_KV_SIZE + n_tensors * _MIN_TENSOR_INFO_SIZE > room
    ):
        raise cur.fail(
            f"header claims {n_tensors} tensors and {n_kv} metadata entries, more than {size} bytes can hold"
        )

    metadata: dict[str, Any] = {}
    vtypes: dict[str, int] = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}", errors="strict")
        vtype = cur.unpack("I", f"value type of {key!r}")
        if key in metadata:
            raise cur.fail(f"metadata key {key!r} appears twice")
        metadata[key] = _read_value(cur, vtype, key)
        vtypes[key] = vtype

    alignment = DEFAULT_ALIGNMENT
    if "general.alignment" in metadata:
        alignment = metadata["general.alignment"]
        if vtypes["general.alignment"] != 4 or alignment == 0 or alignment & (alignment - 1):
            raise cur.fail(f"general.alignment must be a power-of-two u32, got {alignment!r}")

    names, sizes = _type_tables()
    infos: list[tuple[str, tuple[int, ...], int, int]] = []
    seen: set[str] = set()
    for i in range(n_tensors):
        name = cur.string(f"tensor name {i}", errors="strict")
        if name in seen:
            raise cur.fail(f"tensor {name!r} appears twice")
        seen.add(name)
        n_dims = cur.unpack("I", f"dimension count of tensor {name!r}")
        if n_dims > MAX_DIMS:
            raise cur.fail(f"tensor {name!r} has {n_dims} dimensions (at most {MAX_DIMS})")
        ne = tuple(cur.unpack("Q", f"shape of tensor {name!r}") for _ in range(n_dims))
        if any(d >= 1 << 63 for d in ne):
            raise cur.fail(f"tensor {name!r} has a negative dimension {ne}")
        if 0 in ne and math.prod(d for d in ne if d) > MAX_ELEMENTS:  # NumPy could not shape it, even empty
            raise cur.fail(f"tensor {name!r} has an impossible shape {list(ne)}")
        type_id = cur.unpack("I", f"type of tensor {name!r}")
        offset = cur.unpack("Q", f"offset of tensor {name!r}")
        if type_id not in names:
            raise FormatError(
                f"{path}: tensor {name!r} has unknown GGML type id {type_id} (gguf {gguf_version()} does not know it)",
                "upgrade the gguf package (pip install -U gguf) or requantize the file to a "
                "common type (Q8_0, Q4_0, Q4_K, F16)",
            )
        infos.append((name, ne, type_id, offset))

    data_offset = -(-cur.pos // alignment) * alignment
    tensors: list[GGUFTensorInfo] = []
    for name, ne, type_id, offset in infos:
        block, type_size = sizes[type_id]
        ne0 = ne[0] if ne else 1
        if ne0 % block:
            raise cur.fail(
                f"tensor {name!r} ({names[type_id]}) has a row of {ne0} values, "
                f"not a multiple of its block size {block}"
            )
        n_elems = 1
        for d in ne:
            n_elems *= d
        nbytes = n_elems // block * type_size
        start = data_offset + offset
        if start + nbytes > size:
            raise cur.fail(
                f"tensor {name!r} ({nbytes} bytes at offset {offset}) ends past the end of the file ({size} bytes)"
            )
        if validate and offset % alignment:
            raise cur.fail(f"tensor {name!r} offset {offset} is not aligned to {alignment}")
        tensors.append(GGUFTensorInfo(name, ne, type_id, names[type_id], start, nbytes))
    if validate:
        _check_overlaps(cur, tensors)
    return GGUFHeader(path, version, metadata, tensors, alignment, data_offset, size, vtypes)


def _check_overlaps(cur: _Cursor, tensors: list[GGUFTensorInfo]) -> None:
    ordered = sorted((t for t in tensors if t.nbytes), key=lambda t: t.offset)
    for a, b in zip(ordered, ordered[1:]):
        if a.offset + a.nbytes > b.offset:
            raise cur.fail(f"tensors {a.name!r} and {b.name!r} overlap")


def _not_gguf(path: Path, head: bytes) -> FormatError:
    return FormatError(f"{path}: not a GGUF file (starts with {head!r}, expected {MAGIC!r})", "pass a .gguf model file")


def _open_mmap(path: Path) -> tuple[Any, int]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size == 0:
                return b"", 0
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ), size
    except FileNotFoundError:
        raise FormatError(f"{path}: no such file", "check the model path") from None
    except IsADirectoryError:
        raise FormatError(f"{path}: is a directory, not a GGUF file", "pass the .gguf file inside it") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})", "check the path and its permissions") from None


def _tensor_view(buf: Any, info: GGUFTensorInfo) -> np.ndarray:
    """A zero-copy NumPy view of one tensor's bytes (typed for plain types, uint8 blocks else)."""
    shape = info.shape
    dt: np.dtype[Any]
    if info.type_name in PLAIN_DTYPES:
        dt = np.dtype(PLAIN_DTYPES[info.type_name])
    elif info.type_name == "BF16":
        dt = np.dtype(np.uint16)
    else:
        from gguf import GGMLQuantizationType
        from gguf.quants import quant_shape_to_byte_shape

        dt = np.dtype(np.uint8)
        shape = quant_shape_to_byte_shape(shape or (1,), GGMLQuantizationType(info.type_id))
    if info.nbytes == 0:
        return np.zeros(shape, dtype=dt)
    arr = np.frombuffer(buf, dtype=dt, count=info.nbytes // dt.itemsize, offset=info.offset)
    return arr.reshape(shape)


def load_gguf(path: str | os.PathLike[str], *, validate: bool = True) -> WeightSource:
    """Open a GGUF file: metadata as plain Python values, tensors as memory-mapped views."""
    path = Path(path)
    mm, size = _open_mmap(path)
    header = _parse_header(mm, size, path, validate)
    tensors = {t.name: TensorData(t.name, t.shape, t.type_name, _tensor_view(mm, t)) for t in header.tensors}
    return WeightSource(path=path, tensors=tensors, metadata=header.metadata, format="gguf")


# ---------------------------------------------------------------------------------------------
# writing


__all__ = ["MAGIC", "GGUFHeader", "GGUFTensorInfo", "gguf_version", "load_gguf", "read_header", "sniff"]
