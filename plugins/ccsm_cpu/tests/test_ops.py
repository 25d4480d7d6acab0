"""Every op of the contract against the NumPy reference, plus the lazy-evaluation semantics.

Tolerances: exact (0) for data movement (copies, slices, pads, gathers); ``rtol=1e-5,
atol=1e-5`` for elementwise float32 math; ``rtol=1e-4, atol=1e-4`` for reductions, matmuls,
norms, attention and convolutions (different summation order); ``atol=2e-3`` for RoPE at
positions up to 4000 (ggml divides by the reciprocal frequency, so the angle carries an extra
rounding of about ``pos * 6e-8``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from ccsm_core.backends.base import OPS
from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.errors import CcsmError, FormatError, UsageError
from ccsm_core.tensors import TensorData

EXACT = (0.0, 0.0)
ELEM = (1e-5, 1e-5)
ACC = (1e-4, 1e-4)


@pytest.fixture(scope="module")
def be():
    from ccsm_cpu.backend import GgmlBackend

    b = GgmlBackend(threads=1)
    yield b
    b.close()


@pytest.fixture(scope="module")
def ref():
    return NumpyBackend()


def R(*shape: int, seed: int = 0, scale: float = 1.0) -> np.ndarray:
    return (np.random.default_rng(seed + sum(shape)).standard_normal(shape) * scale).astype(np.float32)


def W(a: np.ndarray) -> tuple[str, np.ndarray]:
    return ("w", a)


def I(a: Any) -> tuple[str, np.ndarray]:  # noqa: E743 (I: integer input, beside W and R)
    return ("i", np.asarray(a, np.int32))


def _args(b: Any, args: tuple) -> list:
    out = []
    for a in args:
        if isinstance(a, tuple) and len(a) == 2 and a[0] in ("w", "i"):
            out.append(b.weight(a[1]) if a[0] == "w" else b.asarray(a[1]))
        elif isinstance(a, np.ndarray):
            out.append(b.asarray(a))
        elif isinstance(a, list):
            out.append(_args(b, tuple(a)))
        else:
            out.append(a)
    return out


fr16 = (1.0 / 10000 ** (np.arange(0, 16, 2) / 16)).astype(np.float32)
fr_zero = fr16.copy()
fr_zero[-2:] = 0.0
causal = np.where(np.arange(9)[None, :] <= np.arange(4, 9)[:, None], 0.0, -np.inf).astype(np.float32)

CASES: list[tuple[str, Callable, tuple, tuple[float, float]]] = [
    ("add_same", lambda b, x, y: b.add(x, y), (R(3, 5), R(3, 5, seed=1)), ELEM),
    ("add_row", lambda b, x, y: b.add(x, y), (R(2, 3, 5), R(5)), ELEM),
    ("add_left_small", lambda b, x, y: b.add(x, y), (R(5), R(2, 3, 5)), ELEM),
    ("add_both_bcast", lambda b, x, y: b.add(x, y), (R(4, 1), R(1, 6)), ELEM),
    ("add_4d", lambda b, x, y: b.add(x, y), (R(2, 3, 4, 5), R(2, 1, 4, 1)), ELEM),
    ("add_weight", lambda b, x, y: b.add(x, y), (R(3, 8), W(R(8))), ELEM),
    ("mul_bcast", lambda b, x, y: b.mul(x, y), (R(3, 1, 5), R(4, 1)), ELEM),
    ("scale", lambda b, x: b.scale(x, -1.75), (R(4, 7),), ELEM),
    ("sum_last", lambda b, x: b.sum(x, -1), (R(3, 4, 50),), ACC),
    ("sum_mid", lambda b, x: b.sum(x, 1), (R(3, 33, 5),), ACC),
    ("sum_first", lambda b, x: b.sum(x, 0), (R(6, 4),), ACC),
    ("sum_1d", lambda b, x: b.sum(x, 0), (R(17),), ACC),
    ("silu", lambda b, x: b.silu(x), (R(4, 64, scale=4),), ELEM),
    ("swiglu", lambda b, g, u: b.swiglu(g, u), (R(4, 64, scale=4), R(4, 64)), ELEM),
    ("swiglu_views", lambda b, x: b.swiglu(b.slice(x, -1, 0, 32), b.slice(x, -1, 32, 64)), (R(3, 64, scale=4),), ELEM),
    ("gelu", lambda b, x: b.gelu(x), (R(4, 64, scale=4),), ELEM),
    ("gelu_tanh", lambda b, x: b.gelu(x, approximate=True), (R(4, 64, scale=4),), ELEM),
    ("elu", lambda b, x: b.elu(x), (R(4, 64, scale=3),), ELEM),
    ("elu_alpha", lambda b, x: b.elu(x, 0.3), (R(4, 64, scale=3),), ELEM),
    ("softmax", lambda b, x: b.softmax(x), (R(3, 2, 100, scale=5),), ELEM),
    ("embedding", lambda b, t, i: b.embedding(t, i), (W(R(20, 6)), I([19, 0, 5, 5])), EXACT),
    ("embedding_f16", lambda b, t, i: b.embedding(t, i), (W(R(20, 6).astype(np.float16)), I([1, 2])), EXACT),
    ("matmul_vec", lambda b, x, w: b.matmul(x, w), (R(128), W(R(40, 128))), ACC),
    ("matmul_2d", lambda b, x, w: b.matmul(x, w), (R(5, 96), W(R(33, 96))), ACC),
    ("matmul_4d", lambda b, x, w: b.matmul(x, w), (R(2, 2, 3, 32), W(R(7, 32))), ACC),
    ("matmul_act", lambda b, x, w: b.matmul(x, w), (R(3, 16), R(5, 16)), ACC),
    ("rms_norm", lambda b, x, w: b.rms_norm(x, w, 1e-6), (R(2, 3, 48), W(R(48))), ACC),
    ("layer_norm", lambda b, x, w, c: b.layer_norm(x, w, c, 1e-5), (R(4, 48, scale=3), W(R(48)), W(R(48))), ACC),
    ("rope_pairs", lambda b, x, p: b.rope(x, p, fr16, True), (R(5, 3, 16), I([0, 1, 9, 500, 4000])), (1e-4, 2e-3)),
    ("rope_halves", lambda b, x, p: b.rope(x, p, fr16, False), (R(5, 3, 16), I([0, 1, 9, 500, 4000])), (1e-4, 2e-3)),
    ("rope_zero_freqs", lambda b, x, p: b.rope(x, p, fr_zero, True), (R(2, 1, 16), I([3, 70])), (1e-4, 2e-4)),
    (
        "attention_gqa_mask",
        lambda b, q, k, v, m: b.attention(q, k, v, m, 0.2),
        (R(5, 8, 16), R(9, 2, 16), R(9, 2, 16), causal),
        ACC,
    ),
    (
        "attention_decode",
        lambda b, q, k, v: b.attention(q, k, v, None, 0.125),
        (R(1, 4, 64), R(30, 1, 64), R(30, 1, 64)),
        ACC,
    ),
    ("conv1d", lambda b, x, w, c: b.conv1d(x, w, c, 1, 1, 1), (R(3, 30), W(R(5, 3, 7)), W(R(5))), ACC),
    ("conv1d_strided", lambda b, x, w: b.conv1d(x, w, None, 3, 2, 1), (R(4, 41), W(R(6, 4, 4))), ACC),
    ("conv1d_groups", lambda b, x, w, c: b.conv1d(x, w, c, 2, 1, 2), (R(6, 25), W(R(4, 3, 3)), W(R(4))), ACC),
    ("conv1d_depthwise", lambda b, x, w: b.conv1d(x, w, None, 1, 2, 6), (R(6, 25), W(R(6, 1, 3))), ACC),
    ("conv1d_k1", lambda b, x, w: b.conv1d(x, w, None), (R(6, 5), W(R(2, 6, 1))), ACC),
    ("conv_transpose1d", lambda b, x, w, c: b.conv_transpose1d(x, w, c, 4, 1), (R(5, 6), W(R(5, 3, 8)), W(R(3))), ACC),
    ("conv_transpose1d_k_lt_s", lambda b, x, w: b.conv_transpose1d(x, w, None, 3, 1), (R(2, 4), W(R(2, 3, 2))), ACC),
    (
        "conv_transpose1d_depthwise",
        lambda b, x, w, c: b.conv_transpose1d(x, w, c, 2, 6),
        (R(6, 7), W(R(6, 1, 4)), W(R(6))),
        ACC,
    ),
    (
        "conv_transpose1d_depthwise_odd",
        lambda b, x, w: b.conv_transpose1d(x, w, None, 2, 3),
        (R(3, 5), W(R(3, 2, 5))),
        ACC,
    ),
    (
        "conv_transpose1d_groups",
        lambda b, x, w, c: b.conv_transpose1d(x, w, c, 2, 2),
        (R(4, 5), W(R(4, 3, 4)), W(R(6))),
        ACC,
    ),
    ("pad_const_last", lambda b, x: b.pad(x, -1, 3, 2), (R(2, 3, 4),), EXACT),
    ("pad_const_first", lambda b, x: b.pad(x, 0, 1, 4), (R(2, 3),), EXACT),
    ("pad_replicate", lambda b, x: b.pad(x, 1, 5, 1, "replicate"), (R(3, 4),), EXACT),
    ("pad_replicate_axis0", lambda b, x: b.pad(x, 0, 2, 0, "replicate"), (R(3, 4),), EXACT),
    ("concat_3", lambda b, x, y, z: b.concat([x, y, z], 0), (R(1, 4), R(3, 4), R(2, 4)), EXACT),
    ("concat_mid", lambda b, x, y: b.concat([x, y], 1), (R(2, 3, 4), R(2, 1, 4)), EXACT),
    ("reshape_infer", lambda b, x: b.reshape(x, (-1, 6)), (R(4, 3, 2),), EXACT),
    ("transpose_3d", lambda b, x: b.transpose(x, (1, 2, 0)), (R(2, 3, 4),), EXACT),
    ("transpose_4d", lambda b, x: b.transpose(x, (3, 1, 0, 2)), (R(2, 3, 4, 5),), EXACT),
    ("slice_first", lambda b, x: b.slice(x, 0, 2, 5), (R(6, 3),), EXACT),
    ("slice_mid", lambda b, x: b.slice(x, 1, 1, 3), (R(2, 4, 3),), EXACT),
    ("slice_last_neg", lambda b, x: b.slice(x, -1, -3, 100), (R(2, 6),), EXACT),
    ("slice_then_op", lambda b, x: b.silu(b.slice(x, 1, 2, 5)), (R(3, 8),), ELEM),
]


def test_cases_cover_every_op():
    data_ops = {"asarray", "weight", "zeros", "write", "to_numpy", "shape"}
    names = [c[0] for c in CASES]
    missing = [op for op in OPS if op not in data_ops and not any(n.startswith(op) for n in names)]
    assert not missing, f"ops without a test case: {missing}"


@pytest.mark.parametrize("name,fn,args,tol", CASES, ids=[c[0] for c in CASES])
def test_op_matches_numpy(be, ref, name, fn, args, tol):
    want = fn(ref, *_args(ref, args))
    y = fn(be, *_args(be, args))
    assert be.shape(y) == want.shape
    got = be.to_numpy(y)
    assert got.dtype == np.float32 and got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=tol[0], atol=tol[1])


# -- data in and out -------------------------------------------------------------------------
def test_asarray_ints_and_copy(be):
    a = np.arange(6).reshape(2, 3)
    t = be.asarray(a)
    a[0, 0] = 99  # asarray copies
    got = be.to_numpy(t)
    assert got.dtype == np.int32 and got.tolist() == [[0, 1, 2], [3, 4, 5]]


def test_weight_roundtrip_and_zero_copy(be):
    from ccsm_cpu.backend import _aligned

    w = R(4, 64)
    raw = _aligned(w.nbytes)
    raw[:] = w.view(np.uint8).reshape(-1)
    t = be.weight(TensorData("w", (4, 64), "F32", raw.view(np.float32).reshape(4, 64)))
    np.testing.assert_array_equal(be.to_numpy(t), w)
    raw[:4] = np.array([7.0], np.float32).view(np.uint8)  # aligned storage is used in place
    assert be.to_numpy(t)[0, 0] == 7.0
    unaligned = np.zeros(w.nbytes + 1, np.uint8)[1:]
    unaligned[:] = w.view(np.uint8).reshape(-1)
    t2 = be.weight(TensorData("w", (4, 64), "F32", unaligned.view(np.float32).reshape(4, 64)))
    np.testing.assert_array_equal(be.to_numpy(t2), w)


def test_weight_f16_vector_becomes_f32(be, ref):
    t = TensorData("n", (8,), "F16", R(8).astype(np.float16))
    np.testing.assert_array_equal(be.to_numpy(be.weight(t)), t.numpy())


# -- lazy evaluation, buffers, writes ---------------------------------------------------------
def test_kv_cache_decode_loop_matches_numpy(be, ref):
    """A KV cache written one row per step and read back across many evaluations."""
    steps, kv, d, h = 6, 2, 8, 4
    q, k, v = R(steps, 1, h, d, seed=3), R(steps, 1, kv, d, seed=4), R(steps, 1, kv, d, seed=5)
    outs = {}
    for b in (ref, be):
        ck, cv = b.zeros((steps + 2, kv, d)), b.zeros((steps + 2, kv, d))
        res = []
        for i in range(steps):
            ck = b.write(ck, b.asarray(k[i]), i)
            cv = b.write(cv, b.asarray(v[i]), i)
            att = b.attention(b.asarray(q[i]), b.slice(ck, 0, 0, i + 1), b.slice(cv, 0, 0, i + 1), None, 0.3)
            res.append(b.to_numpy(att))
        outs[b.name] = (np.stack(res), b.to_numpy(ck))
    np.testing.assert_allclose(outs["ggml-cpu"][0], outs["numpy"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(outs["ggml-cpu"][1], outs["numpy"][1])


def test_write_runs_even_if_unused(be):
    buf = be.zeros((3, 2))
    x = R(1, 2)
    be.write(buf, be.asarray(x), 1)  # handle dropped
    be.to_numpy(be.scale(be.asarray(R(2)), 2.0))  # an unrelated evaluation executes it
    np.testing.assert_array_equal(be.to_numpy(buf), np.concatenate([np.zeros((1, 2)), x, np.zeros((1, 2))]))


def test_read_before_write_sees_old_value(be, ref):
    """Program order: a read issued before a write sees the old contents (as NumPy does)."""
    out = {}
    for b in (ref, be):
        buf = b.zeros((4,))
        buf = b.write(buf, b.asarray(np.arange(4, dtype=np.float32)), 0)
        old = b.scale(buf, 1.0)
        buf = b.write(buf, b.asarray(np.full(4, 9.0, np.float32)), 0)
        new = b.scale(buf, 1.0)
        out[b.name] = (b.to_numpy(old), b.to_numpy(new))
    for got, want in zip(out["ggml-cpu"], out["numpy"]):
        np.testing.assert_array_equal(got, want)


def test_streaming_state_pattern(be, ref):
    """Mimi-style streaming conv: read the state, concat, write the tail back, several steps."""
    w = R(3, 2, 3, seed=7)
    chunks = [R(2, 4, seed=10 + i) for i in range(4)]
    outs = {}
    for b in (ref, be):
        wt, st, res = b.weight(w), b.zeros((2, 2)), []
        for c in chunks:
            x = b.concat([st, b.asarray(c)], 1)
            n = b.shape(x)[1]
            st = b.write(st, b.slice(x, 1, n - 2, n), 0, axis=1)
            res.append(b.to_numpy(b.conv1d(x, wt, None)))
        outs[b.name] = np.concatenate(res, 1)
    np.testing.assert_allclose(outs["ggml-cpu"], outs["numpy"], rtol=1e-4, atol=1e-5)


def test_handles_survive_evaluations(be, ref):
    """A temp held across evaluations keeps its value and feeds later graphs (CSM's last_h)."""
    x, w = R(2, 16), R(8, 16)
    h = be.matmul(be.asarray(x), be.weight(w))
    first = be.to_numpy(be.scale(h, 2.0))  # evaluates h too (held)
    later = be.to_numpy(be.add(h, be.asarray(np.ones((2, 8), np.float32))))
    want = x @ w.T
    np.testing.assert_allclose(first, 2 * want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(later, want + 1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(be.to_numpy(h), want, rtol=1e-4, atol=1e-4)


def test_many_ops_span_several_contexts(be, ref):
    x = R(1, 8)
    y, yr = be.asarray(x), x
    for _ in range(3000):  # more tensor objects than one epoch context holds
        y, yr = be.scale(y, 1.0001), ref.scale(yr, 1.0001)
    np.testing.assert_allclose(be.to_numpy(y), yr, rtol=1e-4)


def test_two_threads_match_one(ref):
    from ccsm_cpu.backend import GgmlBackend

    x, w = R(3, 256), R(64, 256)
    with GgmlBackend(threads=1) as b1, GgmlBackend(threads=2, min_parallel_work=0) as b2:
        r1 = b1.to_numpy(b1.matmul(b1.asarray(x), b1.weight(w)))
        r2 = b2.to_numpy(b2.matmul(b2.asarray(x), b2.weight(w)))
        assert b2._n_threads == 2
    np.testing.assert_allclose(r1, r2, rtol=1e-5, atol=1e-5)


def test_small_graphs_run_on_one_thread():
    from ccsm_cpu.backend import GgmlBackend

    with GgmlBackend(threads=2, min_parallel_work=1000) as b:
        b.to_numpy(b.matmul(b.asarray(R(1, 8)), b.weight(R(4, 8))))  # 32 multiply-adds
        assert b._n_threads == 1
        b.to_numpy(b.matmul(b.asarray(R(2, 64)), b.weight(R(16, 64))))  # 2048
        assert b._n_threads == 2


# -- bad input never reaches C -----------------------------------------------------------------
BAD: list[tuple[str, Callable]] = [
    ("matmul_k", lambda b: b.matmul(b.asarray(R(2, 8)), b.weight(R(4, 9)))),
    ("matmul_w3d", lambda b: b.matmul(b.asarray(R(2, 8)), b.weight(R(1, 4, 8)))),
    ("add_shapes", lambda b: b.add(b.asarray(R(2, 3)), b.asarray(R(4)))),
    ("embedding_range", lambda b: b.embedding(b.weight(R(5, 2)), b.asarray(np.array([5], np.int32)))),
    ("embedding_negative", lambda b: b.embedding(b.weight(R(5, 2)), b.asarray(np.array([-1], np.int32)))),
    ("embedding_float_ids", lambda b: b.embedding(b.weight(R(5, 2)), b.asarray(np.array([1.0], np.float32)))),
    ("write_oob", lambda b: b.write(b.zeros((4, 2)), b.asarray(R(2, 2)), 3)),
    ("write_shape", lambda b: b.write(b.zeros((4, 2)), b.asarray(R(1, 3)), 0)),
    ("write_not_buffer", lambda b: b.write(b.asarray(R(4, 2)), b.asarray(R(1, 2)), 0)),
    ("reshape_size", lambda b: b.reshape(b.asarray(R(2, 3)), (4, 2))),
    ("reshape_5d", lambda b: b.reshape(b.asarray(R(32)), (2, 2, 2, 2, 2))),
    ("transpose_perm", lambda b: b.transpose(b.asarray(R(2, 3)), (0, 0))),
    ("slice_empty", lambda b: b.slice(b.asarray(R(2, 3)), 1, 2, 2)),
    ("axis_range", lambda b: b.sum(b.asarray(R(2, 3)), 2)),
    ("concat_shapes", lambda b: b.concat([b.asarray(R(2, 3)), b.asarray(R(3, 3))], 1)),
    ("pad_mode", lambda b: b.pad(b.asarray(R(2, 3)), 1, 1, 1, "reflect")),
    ("pad_negative", lambda b: b.pad(b.asarray(R(2, 3)), 1, -1, 1)),
    ("conv_short", lambda b: b.conv1d(b.asarray(R(2, 3)), b.weight(R(2, 2, 5)), None)),
    ("conv_groups", lambda b: b.conv1d(b.asarray(R(4, 9)), b.weight(R(3, 2, 3)), None, groups=2)),
    ("conv_stride0", lambda b: b.conv1d(b.asarray(R(2, 9)), b.weight(R(2, 2, 3)), None, stride=0)),
    ("conv_transpose1d_channels", lambda b: b.conv_transpose1d(b.asarray(R(3, 5)), b.weight(R(4, 2, 3)), None)),
    (
        "attention_heads",
        lambda b: b.attention(b.asarray(R(1, 3, 4)), b.asarray(R(2, 2, 4)), b.asarray(R(2, 2, 4)), None, 1.0),
    ),
    (
        "attention_mask",
        lambda b: b.attention(
            b.asarray(R(1, 2, 4)), b.asarray(R(2, 2, 4)), b.asarray(R(2, 2, 4)), b.asarray(R(2, 2)), 1.0
        ),
    ),
    ("rope_freqs", lambda b: b.rope(b.asarray(R(2, 1, 8)), b.asarray(np.array([0, 1])), np.ones(3), True)),
    ("rope_positions", lambda b: b.rope(b.asarray(R(2, 1, 8)), b.asarray(np.array([0.0, 1.0])), np.ones(4), True)),
    ("norm_weight", lambda b: b.rms_norm(b.asarray(R(2, 8)), b.weight(R(7)), 1e-5)),
    ("numpy_operand", lambda b: b.add(b.asarray(R(2)), R(2))),
    ("asarray_5d", lambda b: b.asarray(np.zeros((1, 1, 1, 1, 2)))),
    ("asarray_empty", lambda b: b.asarray(np.zeros((0, 2)))),
    ("asarray_complex", lambda b: b.asarray(np.zeros(2, np.complex64))),
]


@pytest.mark.parametrize("name,fn", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_a_usage_error(be, name, fn):
    with pytest.raises(UsageError):
        fn(be)
    # the backend is still usable afterwards
    np.testing.assert_array_equal(be.to_numpy(be.scale(be.asarray(np.ones(2, np.float32)), 3.0)), [3.0, 3.0])


@pytest.mark.parametrize(
    "dtype,shape,nbytes", [("Q8_0", (2, 64), 100), ("Q4_0", (2, 40), 2 * 18 * 2), ("F32", (3, 4), 44)]
)
def test_malformed_weights_are_format_errors(be, dtype, shape, nbytes):
    with pytest.raises(FormatError):
        be.weight(TensorData("bad", shape, dtype, np.zeros(nbytes, np.uint8)))


def test_unknown_weight_type(be):
    with pytest.raises(FormatError):
        be.weight(TensorData("odd", (2, 32), "Q9_9", np.zeros(64, np.uint8)))


def test_foreign_and_closed_handles():
    from ccsm_cpu.backend import GgmlBackend

    a, b = GgmlBackend(threads=1), GgmlBackend(threads=1)
    x = a.asarray(R(2))
    with pytest.raises(UsageError):
        b.to_numpy(x)
    with pytest.raises(UsageError):
        b.scale(x, 2.0)
    b.close()
    a.close()
    a.close()  # idempotent
    with pytest.raises(UsageError):
        a.scale(x, 2.0)


def test_unknown_option():
    from ccsm_cpu.backend import GgmlBackend

    with pytest.raises(UsageError):
        GgmlBackend(thread=2)
    with pytest.raises(UsageError):
        GgmlBackend(threads=0)
    with pytest.raises(UsageError):
        GgmlBackend(min_parallel_work=-1)


def test_errors_are_ccsm_errors():
    assert issubclass(UsageError, CcsmError) and issubclass(FormatError, CcsmError)


def test_mimi_streaming_decode_matches_numpy():
    """Mimi's streaming decoder (convs, transposed convs, state buffers, transformer) end to end."""
    from ccsm_core.backends import get_backend
    from ccsm_core.loading.demo import DEMO_MIMI, random_mimi_tensors
    from ccsm_core.models.mimi import Mimi

    codes = np.random.default_rng(0).integers(0, 2048, (32, 5))
    outs = {}
    for name in ("numpy", "ggml-cpu"):
        b = get_backend(name, **({"threads": 1} if name == "ggml-cpu" else {}))
        stream = Mimi.from_tensors(b, random_mimi_tensors(DEMO_MIMI, 0), DEMO_MIMI).stream_decoder()
        outs[name] = np.concatenate([np.asarray(stream.step(codes[:, i : i + 1])).reshape(-1) for i in range(5)])
    assert np.abs(outs["numpy"]).max() > 1e-3
    np.testing.assert_allclose(outs["ggml-cpu"], outs["numpy"], rtol=1e-4, atol=1e-5)


def test_captured_index_inputs_are_checked_at_every_replay(be):
    """Row indices given to a captured graph (embedding ids, cache rows) are range-checked on the
    host at each replay: GGML would read or write out of bounds."""
    table = be.weight(np.arange(12, dtype=np.float32).reshape(6, 2))
    buf = be.zeros((4, 2))

    def fn(ids, rows):
        be.write(buf, be.embedding(table, ids), rows)
        return be.embedding(table, ids)

    step = be.capture(fn, np.array([1, 2], np.int32), np.array([0, 1], np.int32))
    np.testing.assert_array_equal(step(np.array([5, 0], np.int32), np.array([2, 3], np.int32))[0], [[10, 11], [0, 1]])
    np.testing.assert_array_equal(be.to_numpy(buf)[2:], [[10, 11], [0, 1]])
    with pytest.raises(UsageError, match=r"outside \[0, 6\)"):
        step(np.array([6, 0], np.int32), np.array([0, 1], np.int32))
    with pytest.raises(UsageError, match=r"outside \[0, 4\)"):
        step(np.array([1, 0], np.int32), np.array([3, 4], np.int32))
    with pytest.raises(UsageError, match="outside"):
        step(np.array([-1, 0], np.int32), np.array([0, 1], np.int32))
    one = be.capture(lambda ids: be.embedding(table, ids), np.array([1], np.int32))  # one id: checked too
    np.testing.assert_array_equal(one(np.array([5], np.int32))[0], [[10, 11]])
    for bad in (6, -1):
        with pytest.raises(UsageError, match=rf"{bad}\.\.{bad} are outside \[0, 6\)"):
            one(np.array([bad], np.int32))
