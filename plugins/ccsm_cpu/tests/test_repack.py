"""Q4_0/Q4_K weights multiplied through GGML's repacked (interleaved) copies."""

from __future__ import annotations

import numpy as np
import pytest

from ccsm_core.backends import get_backend
from ccsm_core.testing.conformance import quantized


@pytest.mark.parametrize("dtype", ["Q4_0", "Q4_K"])
def test_repacked_matmul_equals_plain(dtype):
    from ccsm_core.bench import random_tensor

    rng = np.random.default_rng(0)
    w = (
        quantized("w", rng.standard_normal((64, 512)).astype(np.float32), dtype)
        if dtype == "Q4_0"
        else random_tensor("w", (64, 512), dtype, rng)
    )  # gguf cannot quantize to Q4_K: random blocks
    x = rng.standard_normal((3, 512)).astype(np.float32)
    out = {}
    for repack in (True, False):
        be = get_backend("ggml-cpu", threads=1, repack=repack)
        out[repack] = be.to_numpy(be.matmul(be.asarray(x), be.weight(w)))
        if repack and be.memory.repack_buffer_type is not None:
            assert be.memory.repacked_count == 1  # really went through the repacked twin
        be.close()
    np.testing.assert_allclose(out[True], out[False], rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(out[False], x @ w.numpy().T, atol=0.02 * np.abs(out[False]).max())


def test_tied_table_serves_embedding_and_matmul():
    rng = np.random.default_rng(1)
    t = quantized("emb", rng.standard_normal((40, 256)).astype(np.float32), "Q4_0")
    be = get_backend("ggml-cpu", threads=1)
    table = be.weight(t)
    x = rng.standard_normal((1, 256)).astype(np.float32)
    logits = be.to_numpy(be.matmul(be.asarray(x), table))
    rows = be.to_numpy(be.embedding(table, be.asarray(np.array([3, 39], np.int32))))
    np.testing.assert_allclose(rows, t.numpy()[[3, 39]], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(logits, x @ t.numpy().T, atol=0.02 * np.abs(logits).max())


def test_rows_not_a_multiple_of_8_stay_plain():
    rng = np.random.default_rng(2)
    w = quantized("w", rng.standard_normal((2051 // 7 * 7 + 3, 64)).astype(np.float32), "Q4_0")
    be = get_backend("ggml-cpu", threads=1)
    x = rng.standard_normal((1, 64)).astype(np.float32)
    got = be.to_numpy(be.matmul(be.asarray(x), be.weight(w)))
    assert be.memory.repacked_count == 0
    np.testing.assert_allclose(got, x @ w.numpy().T, atol=0.02 * np.abs(got).max())
