"""Mimi codes files (``.npy``): read without trusting the file, written atomically.

`read_codes` parses the ``.npy`` header itself (bounded, never unpickling) and believes nothing
it says until it agrees with the file: the dtype must be an integer type, the shape
``[T, codebooks]``, ``[codebooks, T]`` or ``[1, codebooks, T]`` and its byte size exactly the
data the file holds; the frame count is bounded (`MAX_FRAMES`) and every code must lie in
``0..cardinality - 1``, all before the codes are copied or used.
"""

from __future__ import annotations

import io
import math
import os
from pathlib import Path

import numpy as np

from ..errors import FormatError, UsageError
from ..files import write_atomic
from ..limits import check_allocation, regular_file

FRAME_RATE = 12.5  # Mimi frames a second
MAX_FRAMES = 45_000  # one hour of frames
MAX_HEADER = 10_000  # bytes of .npy header (NumPy's own limit)
CARDINALITY = 2048  # Mimi's codebook size
_HINT = "use a file written by ccsm encode or --codes-out"


def _header(f: io.BufferedReader, where: str) -> tuple[np.dtype, bool, tuple[int, ...]]:
    """``(dtype, fortran_order, shape)`` of the ``.npy`` header at the start of ``f``."""
    fmt = np.lib.format
    try:
        version = fmt.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = fmt.read_array_header_1_0(f, max_header_size=MAX_HEADER)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = fmt.read_array_header_2_0(f, max_header_size=MAX_HEADER)
        else:
            raise ValueError(f"unknown .npy version {version}")
    except Exception as e:  # NumPy's header parser fails in many ways on odd bytes
        text = " ".join(str(e).split())[:100]
        raise FormatError(f"{where}: not a .npy array ({text})", _HINT) from None
    return dtype, bool(fortran), tuple(shape)


def load_codes_npy(path: str | os.PathLike[str], num_codebooks: int | None = None) -> np.ndarray:
    """The integer array of a codes ``.npy`` (2-D, or 3-D with a first dimension of 1), its
    header checked against the file's size, `MAX_FRAMES` and the memory budget before a byte of
    data is read (``num_codebooks``, when known, must be one of the last two dimensions)."""
    p = Path(path)
    if not p.exists() and not p.is_symlink():
        raise UsageError(f"codes file {p} does not exist", "check the path")
    regular_file(p, "codes file")
    where = str(p)
    try:
        with open(p, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            dtype, fortran, shape = _header(f, where)
            start = f.tell()
            _check_shape(dtype, shape, size - start, num_codebooks, where)
            raw = f.read(size - start)
    except OSError as e:
        raise FormatError(f"{where}: cannot read ({e.strerror or e})", "check the file's permissions") from None
    if len(raw) != size - start:
        raise FormatError(f"{where}: the file changed while it was read", "read it again")
    return np.frombuffer(raw, dtype).reshape(shape, order="F" if fortran else "C")


def as_codes(arr: np.ndarray, where: str, num_codebooks: int, cardinality: int = CARDINALITY) -> np.ndarray:
    """``arr`` (from `load_codes_npy`) as ``int64 [num_codebooks, T]``: ``[T, codebooks]`` is
    transposed; every code must lie in ``0..cardinality - 1``."""
    if arr.ndim == 3 and arr.shape[0] == 1:
        arr = arr[0]
    if arr.ndim != 2 or num_codebooks not in arr.shape or arr.dtype.kind not in "iu":
        raise FormatError(
            f"{where}: expected integer codes of shape [T, {num_codebooks}] or [{num_codebooks}, T], "
            f"got {arr.dtype} {list(arr.shape)[:4]}",
            _HINT,
        )
    codes = arr.T if arr.shape[1] == num_codebooks else arr
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) >= cardinality):
        bad = int(codes.min()) if int(codes.min()) < 0 else int(codes.max())
        raise FormatError(f"{where}: code {bad} is out of range 0..{cardinality - 1}", _HINT)
    return np.ascontiguousarray(codes, np.int64)


def read_codes(path: str | os.PathLike[str], num_codebooks: int = 32, cardinality: int = CARDINALITY) -> np.ndarray:
    """A codes ``.npy`` as ``int64 [num_codebooks, T]`` (`load_codes_npy`, then `as_codes`)."""
    return as_codes(load_codes_npy(path, num_codebooks), str(path), num_codebooks, cardinality)


def _check_shape(dtype: np.dtype, shape: tuple[int, ...], data: int, ncb: int | None, where: str) -> None:
    if dtype.kind not in "iu" or dtype.itemsize > 8 or dtype.hasobject:
        held = "Python objects" if dtype.hasobject else str(dtype)
        raise FormatError(f"{where}: codes must be integers, the file holds {held}", _HINT)
    ok = len(shape) == 2 or (len(shape) == 3 and shape[0] == 1)
    if not ok or not all(isinstance(d, int) and d >= 0 for d in shape) or (ncb is not None and ncb not in shape[-2:]):
        want = f"[T, {ncb}] or [{ncb}, T]" if ncb is not None else "[T, codebooks]"
        raise FormatError(f"{where}: expected integer codes of shape {want}, got {dtype} {list(shape)[:4]}", _HINT)
    count = math.prod(shape)
    if count * dtype.itemsize != data:
        more = "more" if count * dtype.itemsize > data else "less"
        raise FormatError(
            f"{where}: its header claims shape {list(shape)}, {more} than the file holds ({data} bytes of data)",
            "the file is truncated or damaged; " + _HINT,
        )
    frames = max(shape[-2:]) if count else 0
    if frames > MAX_FRAMES:
        raise FormatError(
            f"{where}: {frames} frames ({frames / FRAME_RATE / 60:.0f} min) are more than {MAX_FRAMES}",
            "split the codes into files of at most an hour",
        )
    check_allocation(count * 8 * 2, f"the codes of {where}", _HINT)


def codes_bytes(codes: np.ndarray) -> bytes:
    """``codes`` as the bytes of a ``.npy`` file."""
    buf = io.BytesIO()
    np.lib.format.write_array(buf, np.ascontiguousarray(codes), allow_pickle=False)
    return buf.getvalue()


def write_codes(path: str | os.PathLike[str], codes: np.ndarray) -> Path:
    """Write ``codes`` (``[T, codebooks]``) as ``.npy`` at exactly ``path`` (no ``.npy`` added),
    atomically; returns the path written."""
    target = Path(path)
    write_atomic(target, codes_bytes(codes))
    return target
