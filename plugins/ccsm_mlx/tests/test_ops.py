"""MLX-specific paths the conformance suite does not reach: the fused one-position RoPE, buffer
semantics across evaluations, GGUF block repacking, quantized tables, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_mlx.backend import MlxBackend
from ccsm_mlx.weights import QWeight

from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.errors import UsageError
from ccsm_core.tensors import TensorData
from ccsm_core.testing.conformance import quantized


@pytest.fixture
def be():
    return MlxBackend(cache="off")


def R(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


FREQS = (1.0 / 500000 ** (np.arange(0, 64, 2) / 64)).astype(np.float32)


@pytest.mark.parametrize("interleaved", [True, False])
@pytest.mark.parametrize("pos", [0, 1, 37, 2047, 4000])
def test_rope_one_position_fused_kernel(be, interleaved, pos):
    x = R(1, 8, 64)
    freqs = FREQS.copy()
    freqs[-3:] = 0.0  # zero frequencies: infinite periods for MLX
    want = NumpyBackend().rope(x, np.array([pos]), freqs, interleaved)
    got = be.to_numpy(be.rope(be.asarray(x), be.asarray(np.array([pos])), freqs, interleaved))
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-3)


def test_rope_any_positions(be):
    x, pos = R(4, 2, 64), np.array([9, 3, 3, 700])  # not contiguous: the general path
    want = NumpyBackend().rope(x, pos, FREQS, True)
    np.testing.assert_allclose(
        be.to_numpy(be.rope(be.asarray(x), be.asarray(pos), FREQS, True)), want, rtol=1e-4, atol=1e-4
    )


def test_kv_cache_decode_loop(be):
    ref = NumpyBackend()
    steps, kv, d, h = 6, 2, 8, 4
    q, k, v = R(steps, 1, h, d, seed=3), R(steps, 1, kv, d, seed=4), R(steps, 1, kv, d, seed=5)
    outs = []
    for b in (ref, be):
        ck, cv, res = b.zeros((steps + 2, kv, d)), b.zeros((steps + 2, kv, d)), []
        for i in range(steps):
            ck = b.write(ck, b.asarray(k[i]), i)
            cv = b.write(cv, b.asarray(v[i]), i)
            att = b.attention(b.asarray(q[i]), b.slice(ck, 0, 0, i + 1), b.slice(cv, 0, 0, i + 1), None, 0.3)
            res.append(b.to_numpy(att))
        outs.append((np.stack(res), b.to_numpy(ck)))
    np.testing.assert_allclose(outs[1][0], outs[0][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(outs[1][1], outs[0][1])


def test_read_before_write_sees_old_value_and_dropped_handle_is_written(be):
    buf = be.zeros((4,))
    buf = be.write(buf, be.asarray(np.arange(4, dtype=np.float32)), 0)
    old = be.scale(buf, 1.0)
    be.write(buf, be.asarray(np.full(2, 9.0, np.float32)), 1)  # returned handle dropped
    new = be.scale(buf, 1.0)
    np.testing.assert_array_equal(be.to_numpy(old), [0, 1, 2, 3])
    np.testing.assert_array_equal(be.to_numpy(new), [0, 9, 9, 3])


def test_writes_are_evaluated_at_the_evaluation_point(be):
    """A written buffer is materialized by the next to_numpy, even one that does not read it."""
    buf = be.zeros((3, 2))
    be.write(buf, be.asarray(R(1, 2)), 1)
    assert be._pending
    be.to_numpy(be.asarray(np.ones(2, np.float32)))
    assert not be._pending


def test_kv_write_updates_in_place(be):
    """Decode-style writes reuse the buffer's memory instead of copying the whole cache."""
    import mlx.core as mx

    buf = be.zeros((4096, 8, 64))
    row = be.asarray(R(1, 8, 64))
    mx.reset_peak_memory()
    before = mx.get_active_memory()
    for i in range(8):
        buf = be.write(buf, row, i)
        be.to_numpy(be.slice(buf, 0, i, i + 1))
    assert mx.get_peak_memory() - before < buf.nbytes // 2


@pytest.mark.parametrize("dtype", ["Q8_0", "Q4_0", "Q4_1"])
def test_gguf_blocks_stay_quantized_and_exact(be, dtype):
    t = quantized("w", R(48, 256), dtype)
    w = be.weight(t)
    assert isinstance(w, QWeight) and w.group_size == 32 and w.bits == (8 if dtype == "Q8_0" else 4)
    np.testing.assert_array_equal(be.to_numpy(w), t.numpy())
    ids = np.array([47, 0, 5], np.int32)
    np.testing.assert_array_equal(be.to_numpy(be.embedding(w, be.asarray(ids))), t.numpy()[ids])


def test_other_block_types_are_dequantized():
    import gguf
    from gguf import quants

    raw = quants.quantize(R(4, 256), gguf.GGMLQuantizationType.Q5_0)
    t = TensorData("w", (4, 256), "Q5_0", raw)
    b = MlxBackend(cache="off")
    np.testing.assert_array_equal(b.to_numpy(b.weight(t)), t.numpy())


def test_quantize_option_picks_group_sizes():
    b = MlxBackend(cache="off", quantize=4, group_size=128)
    assert b.weight(R(8, 256)).group_size == 128
    assert b.weight(R(8, 96)).group_size == 32  # 96 is no multiple of 128: falls back to 32
    dense = b.weight(R(8, 40))  # fits no group size: kept as float
    assert not isinstance(dense, QWeight)
    assert not isinstance(b.weight(R(256)), QWeight)  # vectors are never quantized
    q8 = MlxBackend(cache="off", quantize=4).weight(quantized("w", R(8, 64), "Q8_0"))
    assert q8.bits == 4  # a Q8_0 source requantized to the asked 4 bits


def test_bf16_weights_keep_their_type(be):
    import mlx.core as mx

    t = quantized("w", R(16, 64), "BF16")
    w = be.weight(t)
    assert w.dtype == mx.bfloat16
    np.testing.assert_array_equal(be.to_numpy(w), t.numpy())
    x = R(2, 64)
    got = be.to_numpy(be.matmul(be.asarray(x), w))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, x @ t.numpy().T, rtol=2e-2, atol=5e-2)  # activations rounded to bf16


def test_quantized_weight_in_any_op(be):
    """A quantized weight used outside matmul/embedding is dequantized, not misread."""
    b = MlxBackend(cache="off", quantize=8)
    w = b.weight(R(4, 64))
    assert isinstance(w, QWeight) and b.shape(w) == (4, 64)
    np.testing.assert_allclose(b.to_numpy(b.add(w, b.asarray(np.zeros((4, 64), np.float32)))), b.to_numpy(w))


BAD = [
    ("matmul_k", lambda b: b.matmul(b.asarray(R(2, 8)), b.weight(R(4, 9)))),
    ("embedding_range", lambda b: b.embedding(b.weight(R(5, 2)), b.asarray(np.array([5])))),
    ("embedding_negative", lambda b: b.embedding(b.weight(R(5, 2)), b.asarray(np.array([-1])))),
    ("embedding_float_ids", lambda b: b.embedding(b.weight(R(5, 2)), b.asarray(np.array([1.0])))),
    ("write_oob", lambda b: b.write(b.zeros((4, 2)), b.asarray(R(2, 2)), 3)),
    ("write_shape", lambda b: b.write(b.zeros((4, 2)), b.asarray(R(1, 3)), 0)),
    ("write_not_buffer", lambda b: b.write(b.asarray(R(4, 2)), b.asarray(R(1, 2)), 0)),
    ("reshape_size", lambda b: b.reshape(b.asarray(R(2, 3)), (4, 2))),
    ("transpose_perm", lambda b: b.transpose(b.asarray(R(2, 3)), (0, 0))),
    ("slice_empty", lambda b: b.slice(b.asarray(R(2, 3)), 1, 2, 2)),
    ("axis_range", lambda b: b.sum(b.asarray(R(2, 3)), 2)),
    ("concat_shapes", lambda b: b.concat([b.asarray(R(2, 3)), b.asarray(R(3, 3))], 1)),
    ("pad_mode", lambda b: b.pad(b.asarray(R(2, 3)), 1, 1, 1, "reflect")),
    ("conv_short", lambda b: b.conv1d(b.asarray(R(2, 3)), b.weight(R(2, 2, 5)), None)),
    ("conv_groups", lambda b: b.conv1d(b.asarray(R(4, 9)), b.weight(R(3, 2, 3)), None, groups=2)),
    ("conv_stride0", lambda b: b.conv1d(b.asarray(R(2, 9)), b.weight(R(2, 2, 3)), None, stride=0)),
    (
        "attention_heads",
        lambda b: b.attention(b.asarray(R(1, 3, 4)), b.asarray(R(2, 2, 4)), b.asarray(R(2, 2, 4)), None, 1.0),
    ),
]


@pytest.mark.parametrize("name,fn", BAD, ids=[n for n, _ in BAD])
def test_bad_input_is_a_usage_error(be, name, fn):
    with pytest.raises(UsageError):
        fn(be)
