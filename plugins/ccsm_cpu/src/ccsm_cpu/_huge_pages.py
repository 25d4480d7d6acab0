"""Weights in transparent huge pages: fewer TLB misses while matrix products stream them.

One CSM decoder step reads about 120 MB of weights; in 4 KiB pages that is some 30,000 page
translations per step, each a possible page-table walk. Linux backs memory with 2 MiB pages
where a program asks for them (``madvise(MADV_HUGEPAGE)``, transparent huge pages in mode
``madvise`` or ``always``). Memory-mapped model files and GGML's own buffers get 4 KiB pages.

`HugeArena` hands out 64-byte aligned pieces of private anonymous mappings advised for huge
pages (2 MiB aligned), for weights copied once at load; `advise` asks the same of memory GGML
allocated (repacked weights) before it is written. NumPy already advises its own allocations of
4 MiB or more (`numpy_backs`): such arrays are used in place. After a weight is copied out of a
read-only file mapping, `release` drops the mapping's pages from this process (the page cache
keeps them), so a load does not hold the file and its copy at once. Used only with the backend
option ``huge_pages=true`` (measured gains and costs: the plugin README).
"""

from __future__ import annotations

import ctypes
import functools
import mmap
from pathlib import Path
from typing import Any

import numpy as np

HUGE = 2 << 20  # bytes in a huge page (x86-64, arm64 with 4 KiB base pages)
CHUNK = 64 << 20  # bytes per arena mapping (untouched tails take no memory)
MIN_BYTES = 256 << 10  # smaller weights stay where they are
_MADV_DONTNEED, _MADV_HUGEPAGE = 4, 14
NUMPY_HUGE_BYTES = 4 << 20  # NumPy advises huge pages for its allocations from this size
PAGE = mmap.PAGESIZE
THP_MODE = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def thp_mode(path: Path = THP_MODE) -> str | None:
    """The kernel's transparent huge page mode (``always``, ``madvise``, ``never``), None if unknown."""
    try:
        text = path.read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    for word in text.split():
        if word.startswith("[") and word.endswith("]"):
            return word[1:-1]
    return None


def available() -> bool:
    """Whether asking for huge pages can have an effect here (Linux, THP not ``never``)."""
    return hasattr(mmap, "MAP_PRIVATE") and thp_mode() in ("always", "madvise")


def numpy_backs(arr: np.ndarray) -> bool:
    """Whether NumPy asked for huge pages when it allocated ``arr``'s memory (its own writable
    memory of `NUMPY_HUGE_BYTES` or more, with its huge page advice on; or THP ``always``)."""
    if not arr.flags.writeable or arr.nbytes < NUMPY_HUGE_BYTES or _mapping(arr) is not None:
        return False
    flag = getattr(getattr(np, "_core", None), "multiarray", None)
    numpy_advises = getattr(flag, "_get_madvise_hugepage", lambda: False)()
    return bool(numpy_advises) or thp_mode() == "always"


def advise(address: int, nbytes: int) -> bool:
    """Ask for huge pages over the whole 2 MiB pages inside ``[address, address + nbytes)``
    (before the memory is first written); False where nothing could be asked."""
    return _advise(address, nbytes, HUGE, _MADV_HUGEPAGE)


def release(arr: np.ndarray) -> bool:
    """Drop from this process the whole pages of ``arr`` when it views a read-only memory
    mapping (a model file): they are read again from the file if touched. False otherwise."""
    m = _mapping(arr)
    if m is None or not memoryview(m).readonly:  # a writable mapping would lose its data
        return False
    return _advise(arr.ctypes.data, arr.nbytes, PAGE, _MADV_DONTNEED)


def _mapping(arr: np.ndarray) -> mmap.mmap | None:
    """The `mmap.mmap` whose memory ``arr`` views, if any."""
    base: Any = arr
    while base is not None:
        if isinstance(base, mmap.mmap):
            return base
        base = getattr(base, "base", None) if not isinstance(base, memoryview) else base.obj
    return None


def _advise(address: int, nbytes: int, unit: int, advice: int) -> bool:
    start = -(-address // unit) * unit
    stop = (address + nbytes) // unit * unit
    if stop <= start:
        return False
    madvise = _madvise()
    if madvise is None:
        return False
    return madvise(ctypes.c_void_p(start), ctypes.c_size_t(stop - start), advice) == 0


@functools.cache
def _madvise() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True).madvise
    except (OSError, AttributeError):
        return None


class HugeArena:
    """A bump allocator over huge-page-advised private mappings; pieces live as long as it does."""

    def __init__(self, chunk: int = CHUNK) -> None:
        self.chunk = chunk
        self._maps: list[mmap.mmap] = []
        self._free = np.zeros(0, np.uint8)  # the unused part of the newest mapping
        self.bytes = 0  # bytes handed out

    def take(self, nbytes: int) -> np.ndarray:
        """A zeroed, 64-byte aligned ``uint8`` array of ``nbytes``."""
        step = -(-nbytes // 64) * 64
        if step > self._free.size:
            size = max(self.chunk, -(-step // HUGE) * HUGE)
            m = mmap.mmap(-1, size + HUGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
            whole = np.frombuffer(m, np.uint8)
            start = (-whole.ctypes.data) % HUGE
            advise(whole.ctypes.data + start, size)
            self._maps.append(m)
            self._free = whole[start : start + size]
        piece, self._free = self._free[:nbytes], self._free[step:]
        self.bytes += nbytes
        return piece
