"""GGML's quantized types against gguf-py: dequantization and matmul, on random blocks.

Legacy types (Q8_0, Q4_0, Q4_1, Q5_0, Q5_1) are quantized from random floats with
``gguf.quants.quantize``; gguf-py cannot quantize K-quants, so their blocks are random bytes
with finite, small fp16 scales (every bit pattern of the rest is a valid block).

Dequantization (``embedding`` = ``ggml_get_rows``, and ``to_numpy`` = a cast to f32) must equal
``gguf.quants.dequantize`` to float32 rounding (``rtol=1e-6``). For the matmul, GGML first converts
the activations to the weight's ``vec_dot_type`` (Q8_0/Q8_1 for legacy types, Q8_K for K-quants,
F16/BF16 for those), so the test checks two things: the result is within 1.5 % (relative
Frobenius norm) of ``x @ dequant(w).T``, and within ``1e-5 * rms(output)`` per element
(``3e-3`` for Q8_1, whose block sums are fp16) of the same product on the activation rounded
as GGML rounds it (emulated in NumPy). Builds whose F16 dot products keep half-precision partial
sums (AVX512-FP16, `Ggml.f16_accumulates_in_half`) are held to ``1e-2`` for F16 (measured 1.9e-3).
"""

from __future__ import annotations

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")
from ccsm_cpu.lib import load  # noqa: E402
from gguf import quants  # noqa: E402

from ccsm_core.tensors import TensorData, f32_to_bf16  # noqa: E402

LEGACY = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")
# K-quants: (block bytes, byte offsets of the fp16 fields)
KQUANTS = {
    "Q2_K": (84, (80, 82)),
    "Q3_K": (110, (108,)),
    "Q4_K": (144, (0, 2)),
    "Q5_K": (176, (0, 2)),
    "Q6_K": (210, (208,)),
}
ALL = LEGACY + tuple(KQUANTS) + ("F16", "BF16")
ROWS, COLS = 48, 512


def make(dtype: str, seed: int = 0) -> TensorData:
    rng = np.random.default_rng(seed)
    if dtype in KQUANTS:
        bsize, f16_at = KQUANTS[dtype]
        blocks = rng.integers(0, 256, (ROWS * COLS // 256, bsize), dtype=np.uint8)
        for off in f16_at:
            scales = rng.uniform(0.002, 0.02, blocks.shape[0]).astype(np.float16)
            blocks[:, off : off + 2] = scales.view(np.uint8).reshape(-1, 2)
        return TensorData("w", (ROWS, COLS), dtype, blocks.reshape(ROWS, -1))
    w = rng.standard_normal((ROWS, COLS)).astype(np.float32)
    if dtype == "F16":
        return TensorData("w", w.shape, dtype, w.astype(np.float16))
    if dtype == "BF16":
        return TensorData("w", w.shape, dtype, f32_to_bf16(w))
    return TensorData("w", w.shape, dtype, quants.quantize(w, gguf.GGMLQuantizationType[dtype]))


@pytest.fixture(scope="module")
def be():
    from ccsm_cpu.backend import GgmlBackend

    b = GgmlBackend(threads=1)
    yield b
    b.close()


@pytest.mark.parametrize("dtype", ALL)
def test_dequantize_matches_gguf(be, dtype):
    t = make(dtype)
    want = t.numpy()  # gguf.quants.dequantize for quantized types
    assert np.all(np.isfinite(want)) and np.std(want) > 0
    w = be.weight(t)
    ids = np.arange(ROWS, dtype=np.int32)[::-1].copy()
    got_rows = be.to_numpy(be.embedding(w, be.asarray(ids)))
    np.testing.assert_allclose(got_rows, want[ids], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(be.to_numpy(w), want, rtol=1e-6, atol=1e-7)


ACT_TYPE = {
    "Q8_0": "Q8_0",
    "Q4_0": "Q8_0",
    "Q5_0": "Q8_0",
    "Q4_1": "Q8_1",
    "Q5_1": "Q8_1",
    **{k: "Q8_K" for k in KQUANTS},
    "F16": "F16",
    "BF16": "BF16",
}


def activation_as_ggml_sees_it(x: np.ndarray, act: str) -> np.ndarray:
    """``x`` after GGML converts it to the weight's ``vec_dot_type`` (NumPy emulation)."""
    if act in ("Q8_0", "Q8_1"):  # Q8_1 carries the same values plus an fp16 block sum
        return quants.dequantize(
            quants.quantize(x, gguf.GGMLQuantizationType.Q8_0), gguf.GGMLQuantizationType.Q8_0
        ).reshape(x.shape)
    if act == "Q8_K":  # quantize_row_q8_K_ref: per 256 values, scale by the signed max to -127
        blocks = x.reshape(-1, 256).astype(np.float32)
        idx = np.argmax(np.abs(blocks), axis=1)
        mx = blocks[np.arange(len(blocks)), idx][:, None]
        iscale = np.float32(-127.0) / mx
        q = np.minimum(127, np.round(iscale * blocks))
        return (q * (np.float32(1.0) / iscale)).astype(np.float32).reshape(x.shape)
    if act == "F16":
        return x.astype(np.float16).astype(np.float32)
    return (f32_to_bf16(x).astype(np.uint32) << 16).view(np.float32).reshape(x.shape)


@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("dtype", ALL)
def test_matmul_matches_dequantized(be, dtype, rows):
    t = make(dtype, seed=1)
    w = t.numpy()
    x = np.random.default_rng(2).standard_normal((rows, COLS)).astype(np.float32)
    want = x @ w.T
    got = be.to_numpy(be.matmul(be.asarray(x), be.weight(t)))
    assert got.shape == want.shape
    scale = float(np.sqrt(np.mean(want**2)))
    # against exact float math: the activation rounding costs about 0.5 % (measured <= 0.75 %)
    assert np.linalg.norm(got - want) <= 1.5e-2 * np.linalg.norm(want)
    # against the same math on the activation as GGML rounds it: float32 summation order only
    # (measured <= 1e-6), except Q8_1's block sums, which GGML stores in fp16 (measured 1.2e-3)
    emulated = activation_as_ggml_sees_it(x, ACT_TYPE[dtype]) @ w.T
    tol = 3e-3 if ACT_TYPE[dtype] == "Q8_1" else 1e-5
    if dtype == "F16" and load().f16_accumulates_in_half:
        tol = 1e-2
    assert np.max(np.abs(got - emulated)) <= tol * scale


def test_quantized_embedding_table_in_a_graph(be):
    t = make("Q4_K", seed=4)
    ids = np.array([0, 47, 3, 3], np.int32)
    y = be.scale(be.embedding(be.weight(t), be.asarray(ids)), 2.0)
    np.testing.assert_allclose(be.to_numpy(y), 2 * t.numpy()[ids], rtol=1e-6, atol=1e-6)
