"""The library loads, passes its declaration smoke test, and one op computes."""

from __future__ import annotations

import numpy as np


def test_library_loads_and_is_the_pinned_version():
    from ccsm_cpu import _ffi, lib

    g = lib.load()
    assert g.version.startswith(_ffi.GGML_VERSION_PREFIX)
    assert g.path.name.startswith("libggml-cpu") and g.path.is_file()
    assert lib.load() is g  # cached
    for gtype, (blck, size) in _ffi.TYPE_BLOCKS.items():
        assert g.lib.ggml_blck_size(gtype) == blck and g.lib.ggml_type_size(gtype) == size


def test_one_op():
    from ccsm_cpu.backend import GgmlBackend

    with GgmlBackend(threads=1) as be:
        x = be.asarray(np.array([[1.0, -2.0, 3.5]], np.float32))
        w = be.weight(np.array([[1.0, 1.0, 1.0], [0.5, 0.0, -2.0]], np.float32))
        np.testing.assert_array_equal(be.to_numpy(be.matmul(x, w)), [[2.5, -6.5]])
