"""The NumPy reference ops against independent, direct formulations."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ccsm_core.backends import OPS, Backend
from ccsm_core.backends.numpy_backend import NumpyBackend

be = NumpyBackend()
rng = np.random.default_rng(0)


def r(*shape):
    return rng.standard_normal(shape).astype(np.float32)


def test_implements_every_op():
    assert isinstance(be, Backend)
    assert {"matmul", "attention", "rope", "conv1d", "conv_transpose1d", "write"} <= set(OPS)
    for op in OPS:
        assert callable(getattr(be, op))


def test_gelu_uses_erf():
    x = np.linspace(-5, 5, 101).astype(np.float32)
    want = np.array([0.5 * v * (1 + math.erf(v / math.sqrt(2))) for v in x])
    np.testing.assert_allclose(be.gelu(x), want, atol=1e-6)


def test_gelu_tanh_approximation():
    x = np.linspace(-5, 5, 101).astype(np.float32)
    want = np.array([0.5 * v * (1 + math.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3))) for v in x])
    np.testing.assert_allclose(be.gelu(x, approximate=True), want, atol=1e-6)


def test_conv1d_direct():
    x, w, b = r(4, 30), r(6, 2, 3), r(6)
    out = be.conv1d(x, w, b, stride=2, dilation=2, groups=2)
    tout = (30 - 5) // 2 + 1
    want = np.zeros((6, tout))
    for o in range(6):
        g = o // 3
        for t in range(tout):
            for i in range(2):
                for k in range(3):
                    want[o, t] += w[o, i, k] * x[g * 2 + i, t * 2 + k * 2]
        want[o] += b[o]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_conv_transpose1d_direct():
    x, w, b = r(4, 5), r(4, 3, 4), r(3)
    out = be.conv_transpose1d(x, w, b, stride=3)
    want = np.zeros((3, (5 - 1) * 3 + 4))
    for i in range(4):
        for t in range(5):
            for o in range(3):
                for k in range(4):
                    want[o, t * 3 + k] += x[i, t] * w[i, o, k]
    want += b[:, None]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-5)


def test_depthwise_conv_transpose():
    x, w = r(4, 5), r(4, 1, 4)
    out = be.conv_transpose1d(x, w, None, stride=2, groups=4)
    for c in range(4):
        want = np.zeros(12)
        for t in range(5):
            want[t * 2 : t * 2 + 4] += x[c, t] * w[c, 0]
        np.testing.assert_allclose(out[c], want, rtol=1e-5, atol=1e-6)


def test_rope_as_complex_rotation():
    x, pos = r(3, 2, 8), np.array([0, 5, 77])
    freqs = np.array([1.0, 0.1, 0.01, 0.001], np.float32)
    out = be.rope(x, pos, freqs, interleaved=True)
    z = (x[..., 0::2] + 1j * x[..., 1::2]) * np.exp(1j * pos[:, None, None] * freqs)
    np.testing.assert_allclose(out[..., 0::2], z.real, atol=1e-5)
    np.testing.assert_allclose(out[..., 1::2], z.imag, atol=1e-5)
    half = be.rope(x, pos, freqs, interleaved=False)
    z = (x[..., :4] + 1j * x[..., 4:]) * np.exp(1j * pos[:, None, None] * freqs)
    np.testing.assert_allclose(half, np.concatenate([z.real, z.imag], -1), atol=1e-5)


def test_attention_gqa_loop():
    q, k, v = r(2, 4, 8), r(5, 2, 8), r(5, 2, 8)
    mask = np.array([[0, 0, 0, -np.inf, -np.inf], [0] * 5], np.float32)
    out = be.attention(q, k, v, mask, 0.3)
    for s in range(2):
        for h in range(4):
            kv = h // 2
            sc = np.array([q[s, h] @ k[t, kv] * 0.3 + mask[s, t] for t in range(5)])
            p = np.exp(sc - sc.max())
            p /= p.sum()
            np.testing.assert_allclose(out[s, h], p @ v[:, kv], rtol=1e-5, atol=1e-6)


def test_norms():
    x, w, b = r(3, 16), r(16), r(16)
    np.testing.assert_allclose(
        be.rms_norm(x, w, 1e-5), x / np.sqrt((x**2).mean(-1, keepdims=True) + 1e-5) * w, rtol=1e-5
    )
    mu, var = x.mean(-1, keepdims=True), x.var(-1, keepdims=True)
    np.testing.assert_allclose(
        be.layer_norm(x, w, b, 1e-5), (x - mu) / np.sqrt(var + 1e-5) * w + b, rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize("mode,want", [("constant", [0, 0, 1, 2, 3, 0]), ("replicate", [1, 1, 1, 2, 3, 3])])
def test_pad(mode, want):
    np.testing.assert_array_equal(be.pad(np.array([[1, 2, 3]], np.float32), 1, 2, 1, mode)[0], want)


def test_grouped_conv_transpose_direct():
    x, w = r(4, 5), r(4, 3, 2)  # 2 groups: 2 inputs -> 3 outputs each
    out = be.conv_transpose1d(x, w, None, stride=2, groups=2)
    want = np.zeros((6, 10))
    for g in range(2):
        for i in range(2):
            for t in range(5):
                for o in range(3):
                    want[g * 3 + o, t * 2 : t * 2 + 2] += x[g * 2 + i, t] * w[g * 2 + i, o]
    np.testing.assert_allclose(out, want, rtol=1e-5, atol=1e-6)
