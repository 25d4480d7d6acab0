"""The shape-dependent fast paths of ggml-cpu's convolutions, ELU and attention against NumPy."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_cpu import _conv
from ccsm_cpu.backend import GgmlBackend

from ccsm_core.backends.numpy_backend import NumpyBackend

REF = NumpyBackend()


@pytest.fixture(scope="module")
def be():
    with GgmlBackend(threads=1) as b:
        yield b


def _close(got, want, tol=2e-6):
    assert got.shape == want.shape
    assert np.abs(got - want).max() <= tol * max(1.0, np.abs(want).max())


@pytest.mark.parametrize(
    "cin,cout,k,stride,dil,t",
    [
        (32, 64, 1, 1, 1, 1920),  # out_prod, one tap
        (16, 8, 3, 1, 2, 64 + 4),  # out_prod, dilated taps
        (64, 1, 3, 1, 1, 130),  # out_prod, one output channel
        (512, 64, 7, 1, 1, 8),  # few outputs: weight streamed as src0
        (8, 6, 4, 2, 1, 11),  # strided, small
        (80, 24, 3, 1, 1, 66),  # im2col matmul (too many input channels for out_prod)
    ],
)
def test_conv1d_paths(be, cin, cout, k, stride, dil, t):
    rng = np.random.default_rng(cin * 1000 + t)
    x = rng.standard_normal((cin, t)).astype(np.float32)
    w = rng.standard_normal((cout, cin, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    got = be.to_numpy(be.conv1d(be.asarray(x), be.weight(w), be.weight(b), stride, dil))
    _close(got, REF.conv1d(x, w, b, stride, dil))
    got = be.to_numpy(be.conv1d(be.asarray(x), be.weight(w), None, stride, dil))  # twice: cached weights
    _close(got, REF.conv1d(x, w, None, stride, dil))


@pytest.mark.parametrize(
    "cin,cout,k,s,t",
    [
        (16, 8, 8, 4, 30),  # K = 2 s: one shifted add
        (8, 4, 9, 3, 7),  # K = 3 s: two shifted adds
        (8, 4, 7, 3, 5),  # K < 3 s: padded taps, trimmed output
        (6, 5, 2, 3, 4),  # K < s: no overlap
        (4, 3, 5, 1, 3),  # stride 1
    ],
)
def test_conv_transpose_paths(be, cin, cout, k, s, t):
    rng = np.random.default_rng(k * 100 + t)
    x = rng.standard_normal((cin, t)).astype(np.float32)
    w = rng.standard_normal((cin, cout, k)).astype(np.float32)
    b = rng.standard_normal(cout).astype(np.float32)
    got = be.to_numpy(be.conv_transpose1d(be.asarray(x), be.weight(w), be.weight(b), s))
    _close(got, REF.conv_transpose1d(x, w, b, s))


def test_bias_blocks_stay_within_budget(monkeypatch):
    monkeypatch.setattr(_conv, "BIAS_BUDGET", 4 * 8 * 100)
    rng = np.random.default_rng(5)
    w = rng.standard_normal((8, 4, 1)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    with GgmlBackend(threads=1) as be:
        W, B = be.weight(w), be.weight(b)
        for t in (64, 100, 37, 64):  # the second length no longer fits: broadcast add instead
            x = rng.standard_normal((4, t)).astype(np.float32)
            _close(be.to_numpy(be.conv1d(be.asarray(x), W, B)), REF.conv1d(x, w, b))
        assert be.memory.derived_bytes <= 4 * 8 * 100


def test_elu_input_still_readable_after(be):
    """ELU must not modify its input (ggml_clamp, say, works in place)."""
    x = (np.random.default_rng(6).standard_normal((8, 100)) * 3).astype(np.float32)
    h = be.scale(be.asarray(x), 1.0)
    got = be.to_numpy(be.add(h, be.elu(h)))
    _close(got, x + REF.elu(x))
    assert np.array_equal(
        be.to_numpy(be.elu(be.asarray(np.array([[0.5, 2.0, 1e-8]], np.float32)))),
        np.array([[0.5, 2.0, 1e-8]], np.float32),
    )  # positive inputs pass exactly


@pytest.mark.parametrize("s,t,h,kv,d", [(2, 265, 8, 8, 64), (5, 9, 4, 2, 16), (40, 40, 4, 1, 8)])
def test_attention_paths(be, s, t, h, kv, d):
    rng = np.random.default_rng(s + t)
    q = rng.standard_normal((s, h, d)).astype(np.float32)
    k = rng.standard_normal((t, kv, d)).astype(np.float32)
    v = rng.standard_normal((t, kv, d)).astype(np.float32)
    m = np.where(rng.random((s, t)) < 0.3, -np.inf, 0).astype(np.float32)
    m[:, 0] = 0
    got = be.to_numpy(be.attention(be.asarray(q), be.asarray(k), be.asarray(v), be.asarray(m), 0.3))
    _close(got, REF.attention(q, k, v, m, 0.3))
