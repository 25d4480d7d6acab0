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


@pytest.mark.parametrize("dtype", ["Q4_0", "Q4_K"])
def test_repacked_rows_padded_to_fours_are_each_row_alone(dtype):
    """`matmul_rows` pads rows to a multiple of four for repacked weights (GGML multiplies the
    rest one by one, each a whole pass over the weight): every row stays bitwise its product alone."""
    from ccsm_core.bench import random_tensor

    rng = np.random.default_rng(3)
    w = random_tensor("w", (64, 512), dtype, rng)
    x = rng.standard_normal((9, 512)).astype(np.float32)
    be = get_backend("ggml-cpu", threads=2)
    table = be.weight(w)
    alone = [be.to_numpy(be.matmul(be.asarray(x[i : i + 1]), table)) for i in range(9)]
    if be.memory.repack_buffer_type is not None:
        assert be.memory.repacks(table)
    for b in range(1, 10):
        out = be.to_numpy(be.matmul_rows(be.asarray(x[:b]), table))
        assert out.shape == (b, 64)
        for i in range(b):
            assert np.array_equal(out[i], alone[i][0]), (b, i)
    be.close()
