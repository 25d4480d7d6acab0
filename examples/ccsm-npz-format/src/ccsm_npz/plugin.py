"""Registers the ``npz`` weight format: a NumPy ``.npz`` archive of float arrays, one per tensor.

ccsm opens every weight file through its formats registry, so with this plugin installed a CSM
checkpoint folder may hold ``model.npz`` instead of ``model.safetensors`` (and Mimi ``mimi.npz``).
"""

from __future__ import annotations

import struct

from ccsm_core import hookimpl

ZIP_MAGIC = b"PK\x03\x04"


def sniff(first_bytes: bytes) -> bool:
    """A zip archive whose first member is a ``.npy`` array (what ``numpy.savez`` writes)."""
    if len(first_bytes) < 30 or first_bytes[:4] != ZIP_MAGIC:
        return False
    (name_len,) = struct.unpack_from("<H", first_bytes, 26)
    if 30 + name_len > len(first_bytes):  # a name longer than the sniffed bytes: any zip may be ours
        return True
    return first_bytes[30 : 30 + name_len].endswith(b".npy")


def load_npz(path, *, validate=True):
    """The arrays of ``path`` as a ``WeightSource`` (never unpickles: object arrays are refused)."""
    import zipfile
    from pathlib import Path

    import numpy as np

    from ccsm_core.errors import FormatError
    from ccsm_core.tensors import TensorData, WeightSource

    dtypes = {
        np.dtype(np.float32): "F32",
        np.dtype(np.float16): "F16",
        np.dtype(np.float64): "F64",
        np.dtype(np.int32): "I32",
        np.dtype(np.int64): "I64",
        np.dtype(np.int8): "I8",
    }
    path = Path(path)
    tensors = {}
    try:
        with np.load(path, allow_pickle=False) as archive:
            for name in archive.files:
                arr = archive[name]
                kind = dtypes.get(arr.dtype)
                if kind is None:
                    raise FormatError(
                        f"{path}: array {name!r} has dtype {arr.dtype}, not a tensor type",
                        "store float32/float16 arrays",
                    )
                tensors[name] = TensorData(name, tuple(int(d) for d in arr.shape), kind, arr.reshape(-1))
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise FormatError(f"{path}: not a readable .npz archive ({e})", "write it with numpy.savez") from None
    return WeightSource(path, tensors, {}, "npz")


@hookimpl
def register_formats(register):
    register("npz", load_npz, suffixes=(".npz",), sniff=sniff, summary="NumPy .npz archive (example plugin)")
