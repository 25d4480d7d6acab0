"""On-disk cache of converted weights, keyed by the source bytes and the conversion options.

One entry per converted tensor: ``<root>/<key>/`` holding ``arrays.safetensors`` (written by
``mx.save_safetensors``) and ``manifest.json`` (format, shape, options, the array file's size and
SHA-1). An entry is written in a temporary folder and renamed into place, so readers see it
whole or not at all; one that fails its checks on load is removed and rebuilt by the caller.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlx.core as mx
import numpy as np

from .weights import Precision, QWeight, source_info

FORMAT = "ccsm-mlx-cache-1"
ARRAYS, MANIFEST = "arrays.safetensors", "manifest.json"
_CHUNK = 1 << 24


def default_root() -> Path:
    """``$CCSM_MLX_CACHE``, else ``$XDG_CACHE_HOME/ccsm/mlx`` (``~/.cache/ccsm/mlx``)."""
    env = os.environ.get("CCSM_MLX_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ccsm" / "mlx"


def digest(data: Any, head: bytes = b"") -> str:
    """SHA-1 of ``head`` and the chunk digests of ``data``'s bytes (16 MiB chunks, hashed on
    several threads: hashlib releases the GIL, so this scales with the cores)."""
    buf = np.ascontiguousarray(data).reshape(-1).view(np.uint8).data  # a memoryview of the bytes
    chunks = [buf[i : i + _CHUNK] for i in range(0, len(buf), _CHUNK)] or [buf]
    if len(chunks) == 1:
        parts = [hashlib.sha1(chunks[0]).digest()]
    else:
        parts = list(_pool().map(lambda c: hashlib.sha1(c).digest(), chunks))
    h = hashlib.sha1(head)
    for part in parts:
        h.update(part)
    return h.hexdigest()


_POOL: list[Any] = []


def _pool() -> Any:
    if not _POOL:
        from concurrent.futures import ThreadPoolExecutor

        _POOL.append(ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1), thread_name_prefix="ccsm-mlx-hash"))
    return _POOL[0]


def _file_sha1(path: Path) -> str:
    if path.stat().st_size == 0:
        return digest(np.zeros(0, np.uint8))
    return digest(np.memmap(path, dtype=np.uint8, mode="r"))


def tensor_key(t: Any, prec: Precision) -> str:
    """SHA-1 of the stored bytes plus type, shape, options and cache format (not the name)."""
    stored, shape, raw = source_info(t)
    minor = mx.__version__.rsplit(".", 1)[0]  # type: ignore[attr-defined]  # mlx's stubs lack __version__
    return digest(raw, json.dumps([FORMAT, minor, stored, shape, prec.key()]).encode())


class WeightCache:
    """Converted tensors under ``root``; ``stats`` counts hits, misses, writes and rebuilds."""

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_root()
        self.stats = {"hits": 0, "misses": 0, "written": 0, "rebuilt": 0, "bytes_written": 0}

    def path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> mx.array | QWeight | None:
        """The entry's value, or ``None`` (missing, or damaged: then it is removed)."""
        entry = self.path(key)
        if not entry.is_dir():
            self.stats["misses"] += 1
            return None
        try:
            value = self._read(entry, key)
        except Exception:  # damaged in any way: rebuild
            shutil.rmtree(entry, ignore_errors=True)
            self.stats["rebuilt"] += 1
            self.stats["misses"] += 1
            return None
        self.stats["hits"] += 1
        return value

    def _read(self, entry: Path, key: str) -> mx.array | QWeight:
        man = json.loads((entry / MANIFEST).read_text())
        if man.get("format") != FORMAT or man.get("key") != key:
            raise ValueError("manifest does not describe this entry")
        arrays = entry / ARRAYS
        if arrays.stat().st_size != man["bytes"] or _file_sha1(arrays) != man["sha1"]:
            raise ValueError("checksum mismatch")
        data = mx.load(str(arrays))
        if not isinstance(data, dict):
            raise ValueError("arrays file holds no named arrays")
        mx.eval(data)  # materialize now: the file may be replaced later
        shape = tuple(man["shape"])
        if man["kind"] == "dense":
            value = data["w"]
            if tuple(value.shape) != shape:
                raise ValueError("shape mismatch")
            return value
        q = QWeight(
            data["wq"],
            data["scales"],
            data["biases"],
            int(man["group_size"]),
            int(man["bits"]),
            (int(shape[0]), int(shape[1])),
        )
        if q.scales.shape != (shape[0], shape[1] // q.group_size) or q.wq.shape != (shape[0], shape[1] * q.bits // 32):
            raise ValueError("shape mismatch")
        return q

    def put(self, key: str, value: mx.array | QWeight, source: dict[str, Any]) -> None:
        """Write an entry atomically (temporary folder, then rename); a concurrent writer wins."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=self.root))
        try:
            if isinstance(value, QWeight):
                arrays, man = (
                    value.arrays(),
                    {
                        "kind": "quantized",
                        "group_size": value.group_size,
                        "bits": value.bits,
                        "shape": list(value.shape),
                    },
                )
            else:
                arrays, man = {"w": value}, {"kind": "dense", "shape": list(value.shape)}
            mx.save_safetensors(str(tmp / ARRAYS), arrays)
            size = (tmp / ARRAYS).stat().st_size
            man.update(format=FORMAT, key=key, source=source, bytes=size, sha1=_file_sha1(tmp / ARRAYS))
            (tmp / MANIFEST).write_text(json.dumps(man, indent=1))
            try:
                os.rename(tmp, self.path(key))
            except OSError:  # another process wrote the same entry first
                return
            self.stats["written"] += 1
            self.stats["bytes_written"] += size
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def size(self) -> tuple[int, int]:
        """``(entries, bytes)`` currently in the cache."""
        n = total = 0
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.is_dir() and not entry.name.startswith(".tmp-"):
                    n += 1
                    total += sum(f.stat().st_size for f in entry.iterdir() if f.is_file())
        return n, total

    def clear(self) -> int:
        """Remove every entry (and leftover temporary folders); returns how many entries went."""
        n, _ = self.size()
        if self.root.is_dir():
            for entry in self.root.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
        return n
