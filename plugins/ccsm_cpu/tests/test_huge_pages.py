"""Weights copied into transparent huge pages (`ccsm_cpu._huge_pages`)."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_cpu import _huge_pages as hp

from ccsm_core.backends import get_backend
from ccsm_core.errors import UsageError
from ccsm_core.testing.conformance import quantized


@pytest.mark.parametrize(
    ("text", "mode"),
    [
        ("always [madvise] never\n", "madvise"),
        ("[always] madvise never", "always"),
        ("always madvise [never]", "never"),
    ],
)
def test_thp_mode_is_the_bracketed_word(tmp_path, text, mode):
    f = tmp_path / "enabled"
    f.write_text(text)
    assert hp.thp_mode(f) == mode
    assert hp.thp_mode(tmp_path / "missing") is None


def test_arena_pieces_are_aligned_zeroed_and_apart():
    arena = hp.HugeArena(chunk=4 << 20)
    pieces = [arena.take(n) for n in (100, 3 << 20, 1, 5 << 20, 777)]
    for p, n in zip(pieces, (100, 3 << 20, 1, 5 << 20, 777)):
        assert p.size == n and p.ctypes.data % 64 == 0 and not p.any()
        p[:] = 7
    spans = sorted((p.ctypes.data, p.ctypes.data + p.size) for p in pieces)
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:]))  # no overlap
    assert all((p == 7).all() for p in pieces)
    assert arena.bytes == sum(p.size for p in pieces)
    assert pieces[0].ctypes.data % hp.HUGE == 0  # a mapping starts on a huge page


@pytest.mark.skipif(not hp.available(), reason="no transparent huge pages here")
def test_arena_memory_is_advised_for_huge_pages():
    piece = hp.HugeArena().take(4 << 20)
    piece[:] = 1
    start = piece.ctypes.data
    with open("/proc/self/smaps") as f:
        text = f.read()
    flags = None
    for block in text.split("\n"):
        parts = block.split()
        if parts and "-" in parts[0] and len(parts) >= 5:
            lo, hi = (int(v, 16) for v in parts[0].split("-"))
            inside = lo <= start < hi
        elif block.startswith("VmFlags:") and inside:
            flags = block.split()[1:]
            break
    assert flags is not None and "hg" in flags  # madvise(MADV_HUGEPAGE) took


def _weight(rng: np.random.Generator) -> object:
    return quantized("w", rng.standard_normal((512, 1024)).astype(np.float32), "Q8_0")


def test_weights_in_huge_pages_give_the_same_products():
    rng = np.random.default_rng(0)
    w = _weight(rng)
    x = rng.standard_normal((3, 1024)).astype(np.float32)
    out = {}
    for huge in (True, False):
        be = get_backend("ggml-cpu", threads=1, huge_pages=huge)
        out[huge] = be.to_numpy(be.matmul(be.asarray(x), be.weight(w)))
        if huge and hp.available():
            assert be.memory.huge is not None and be.memory.huge.bytes >= 512 * 1024  # copied there
        if not huge:
            assert be.memory.huge is None
        be.close()
    assert np.array_equal(out[True], out[False])


def test_without_huge_pages_an_aligned_weight_is_used_in_place():
    from ccsm_cpu._persistent_memory import aligned

    from ccsm_core.tensors import TensorData

    src = _weight(np.random.default_rng(1))
    data = aligned(src.data.nbytes)
    data[:] = src.data.reshape(-1)
    w = TensorData(src.name, src.shape, src.dtype, data.reshape(src.data.shape))
    be = get_backend("ggml-cpu", threads=1, huge_pages=False)
    ptr, _, _ = be.memory.weight(w)
    assert int(be._ffi.cast("uintptr_t", be._lib.ggml_get_data(ptr))) == w.data.ctypes.data
    be.close()


def test_huge_pages_are_off_by_default():
    be = get_backend("ggml-cpu", threads=1)
    assert be.memory.huge is None
    be.close()


def test_huge_pages_option_must_be_a_flag():
    with pytest.raises(UsageError, match="huge_pages must be true or false"):
        get_backend("ggml-cpu", huge_pages="yes")


def test_numpy_memory_already_in_huge_pages_is_used_in_place():
    """NumPy advises huge pages for its own allocations of 4 MiB and more: no second copy."""
    rng = np.random.default_rng(2)
    big = rng.standard_normal((1024, 1024)).astype(np.float32)  # 4 MiB, NumPy's own memory
    be = get_backend("ggml-cpu", threads=1, huge_pages=True)
    ptr, _, _ = be.memory.weight(big)
    in_place = int(be._ffi.cast("uintptr_t", be._lib.ggml_get_data(ptr))) == big.ctypes.data
    assert in_place == (hp.numpy_backs(big) and big.ctypes.data % 32 == 0)
    if hp.available() and big.ctypes.data % 32 == 0:
        assert in_place  # NumPy's huge page advice is on by default on Linux
    be.close()


def _mapped_rss_kb(address: int) -> int:
    with open("/proc/self/smaps") as f:
        inside = False
        for line in f:
            parts = line.split()
            if parts and "-" in parts[0] and len(parts) >= 5:
                lo, hi = (int(v, 16) for v in parts[0].split("-"))
                inside = lo <= address < hi
            elif inside and line.startswith("Rss:"):
                return int(parts[1])
    raise AssertionError("mapping not found")


def test_a_weight_copied_out_of_a_file_mapping_leaves_its_pages(tmp_path):
    import mmap

    path = tmp_path / "w.bin"
    values = np.arange(3 << 20, dtype=np.uint8) % 251
    path.write_bytes(values.tobytes())
    with open(path, "rb") as f:
        m = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    view = np.frombuffer(m, np.uint8)
    assert view.sum() > 0 and _mapped_rss_kb(view.ctypes.data) >= 3 << 10  # every page touched
    assert hp.release(view)
    assert _mapped_rss_kb(view.ctypes.data) == 0  # dropped from this process
    assert np.array_equal(view, values)  # and read again from the file when touched
    writable = values.copy()
    assert not hp.release(writable) and np.array_equal(writable, values)  # own memory: never dropped
    del view
    m.close()
