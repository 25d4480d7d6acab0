"""Mimi codec: parity with moshi 0.2.2 fixtures, streaming, lengths, errors, attention window."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.errors import FormatError, UsageError
from ccsm_core.formats.safetensors import load_safetensors
from ccsm_core.loading.mimi import load_mimi
from ccsm_core.models.mimi import DEFAULT_MIMI_CONFIG, Mimi, mimi_config
from ccsm_core.models.mimi_layers import Weights
from ccsm_core.models.mimi_transformer import MimiTransformer

FIX = Path(__file__).parent / "fixtures" / "csm-tiny"


@pytest.fixture(scope="module")
def ref():
    return dict(np.load(FIX / "mimi_reference.npz"))


@pytest.fixture(scope="module")
def mimi():
    return load_mimi(FIX / "mimi.safetensors", FIX / "mimi_config.json", NumpyBackend())


@pytest.fixture(scope="module")
def tensors():
    return {k: v.numpy() for k, v in load_safetensors(FIX / "mimi.safetensors").items()}


@pytest.fixture(scope="module")
def config():
    return json.loads((FIX / "mimi_config.json").read_text())


# --- parity with the original ------------------------------------------------------------------
def test_encode_matches_moshi(mimi, ref):
    codes = mimi.encode(ref["enc_in"])
    assert codes.dtype == np.int64 and codes.shape == (32, 13)
    np.testing.assert_array_equal(codes, ref["enc_codes"][0])
    np.testing.assert_array_equal(mimi.encode(ref["enc_in"][0, 0]), codes)  # [N] input too


def test_encode_latent_matches_moshi(mimi, ref):
    lat = mimi.encode_latent(ref["enc_in"])
    assert lat.shape == ref["enc_latent"].shape[1:]
    np.testing.assert_allclose(lat, ref["enc_latent"][0], atol=1e-5, rtol=0)


def test_decode_matches_moshi(mimi, ref):
    np.testing.assert_allclose(mimi.decode_latent(ref["dec_codes"]), ref["dec_latent"][0], atol=1e-6, rtol=0)
    out = mimi.decode(ref["dec_codes"])
    assert out.dtype == np.float32 and out.shape == (19200,)
    np.testing.assert_allclose(out, ref["dec_out"][0, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("chunks", [[1] * 10, [3, 1, 6], [10]])
def test_stream_decode_equals_batch(mimi, ref, chunks):
    codes = ref["dec_codes"][0]
    dec = mimi.stream_decoder()
    parts, t = [], 0
    for k in chunks:
        part = dec.step(codes[:, t : t + k])
        assert part.shape == (k * 1920,)
        parts.append(part)
        t += k
    streamed = np.concatenate(parts)
    np.testing.assert_allclose(streamed, mimi.decode(codes), atol=1e-5, rtol=0)
    np.testing.assert_allclose(streamed, ref["dec_stream_out"][0, 0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("piece", [1920, 1000, 5000])
def test_stream_encode_matches_moshi(mimi, ref, piece):
    wave = ref["enc_in"][0, 0]
    enc = mimi.stream_encoder()
    codes = np.concatenate([enc.step(wave[i : i + piece]) for i in range(0, wave.size, piece)], 1)
    np.testing.assert_array_equal(codes, ref["enc_stream_codes"][0])  # the partial last frame is dropped


# --- lengths ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("n", [1, 1919, 1920, 1921, 5000])
def test_encode_length(mimi, n):
    wave = np.random.default_rng(n).standard_normal(n).astype(np.float32) * 0.1
    assert mimi.encode(wave).shape == (32, math.ceil(n / 1920))


@pytest.mark.parametrize("t", [1, 2, 7])
def test_decode_length(mimi, t):
    codes = np.random.default_rng(t).integers(0, 2048, (32, t))
    assert mimi.decode(codes).shape == (t * 1920,)


def test_constants(mimi):
    assert (mimi.sample_rate, mimi.frame_rate, mimi.samples_per_frame) == (24000, 12.5, 1920)
    assert mimi.num_codebooks == 32 and mimi.cardinality == 2048


# --- errors ----------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "codes, words",
    [
        (np.full((32, 2), 2048), "out of range"),
        (np.full((32, 2), -1), "out of range"),
        (np.zeros((31, 2), np.int64), "31 codebooks"),
        (np.zeros((2, 32, 2), np.int64), "shape"),
        (np.zeros((32, 2), np.float32), "integers"),
    ],
)
def test_bad_codes(mimi, codes, words):
    with pytest.raises(UsageError, match=words):
        mimi.decode(codes)
    with pytest.raises(UsageError, match=words):
        mimi.stream_decoder().step(codes)


@pytest.mark.parametrize(
    "wave, words",
    [
        (np.zeros((2, 1920), np.float32), "mono"),
        (np.zeros((1, 2, 1920), np.float32), "mono"),
        (np.zeros(0, np.float32), "empty"),
        (np.array([0.0, np.nan], np.float32), "NaN"),
    ],
)
def test_bad_audio(mimi, wave, words):
    with pytest.raises(UsageError, match=words):
        mimi.encode(wave)


def test_missing_tensor(tensors, config):
    name = "decoder_transformer.transformer.layers.1.linear2.weight"
    broken = {k: v for k, v in tensors.items() if k != name}
    with pytest.raises(FormatError, match=name.replace(".", r"\.") + ".*missing"):
        Mimi.from_tensors(NumpyBackend(), broken, config)


def test_misshaped_tensor(tensors, config):
    name = "quantizer.rvq_rest.vq.layers.4._codebook.embedding_sum"
    broken = dict(tensors, **{name: np.zeros((2048, 31), np.float32)})
    with pytest.raises(FormatError, match=name.replace(".", r"\.") + r".*\[2048, 31\].*\[2048, 32\]"):
        Mimi.from_tensors(NumpyBackend(), broken, config)


class _ShapeOnlyWeights(Weights):
    """Answers every request with a constant tensor of the asked shape, and records it."""

    def __init__(self) -> None:
        super().__init__(_ShapeBackend(), {})
        self.requested: dict[str, tuple] = {}

    def _raw(self, name, shape):
        self.requested[name] = tuple(shape)
        return np.broadcast_to(np.float32(1), tuple(shape))


class _ShapeBackend:
    name = "shapes"

    def weight(self, t):
        return np.shape(t)


def test_default_config_is_the_released_mimi():
    """The real checkpoint: 318 tensors, 96,151,393 elements, of which Mimi reads all but the
    32 ``_codebook._initialized`` flags."""
    ws = _ShapeOnlyWeights()
    Mimi(ws.be, ws, mimi_config(None))
    assert len(ws.requested) == 318 - 32
    assert sum(math.prod(s) for s in ws.requested.values()) == 96_151_393 - 32
    assert ws.requested["decoder.model.2.convtr.convtr.weight"] == (1024, 512, 16)
    assert ws.requested["upsample.convtr.convtr.convtr.weight"] == (512, 1, 4)
    assert DEFAULT_MIMI_CONFIG["transformer"]["context"] == 250


# --- attention window (> 250 steps) ----------------------------------------------------------------
D, H, FF, CTX = 16, 2, 32, 250


def _random_transformer_weights(rng):
    p = "tr.transformer.layers.0."
    w = {
        p + "norm1.weight": 1 + 0.1 * rng.standard_normal(D),
        p + "norm1.bias": 0.1 * rng.standard_normal(D),
        p + "norm2.weight": 1 + 0.1 * rng.standard_normal(D),
        p + "norm2.bias": 0.1 * rng.standard_normal(D),
        p + "self_attn.in_proj_weight": rng.standard_normal((3 * D, D)) / 2,
        p + "self_attn.out_proj.weight": rng.standard_normal((D, D)) / 4,
        p + "linear1.weight": rng.standard_normal((FF, D)) / 4,
        p + "linear2.weight": rng.standard_normal((D, FF)) / 6,
        p + "layer_scale_1.scale": np.full(D, 0.7),
        p + "layer_scale_2.scale": np.full(D, 0.5),
    }
    return {k: np.asarray(v, np.float32) for k, v in w.items()}


def _tc():
    return dict(
        DEFAULT_MIMI_CONFIG["transformer"],
        d_model=D,
        num_heads=H,
        num_layers=1,
        dim_feedforward=FF,
        input_dimension=D,
        output_dimensions=[D],
        context=CTX,
    )


def _reference_layer(w, x, context):
    """Direct float64 NumPy transformer layer; ``context=None`` means unlimited causal attention."""
    p = "tr.transformer.layers.0."
    w = {k[len(p) :]: v.astype(np.float64) for k, v in w.items()}
    erf = np.vectorize(math.erf)

    def ln(z, g, b):
        mu = z.mean(-1, keepdims=True)
        return (z - mu) / np.sqrt(((z - mu) ** 2).mean(-1, keepdims=True) + 1e-5) * g + b

    t, hd = x.shape[0], D // H
    qkv = ln(x, w["norm1.weight"], w["norm1.bias"]) @ w["self_attn.in_proj_weight"].T
    q, k, v = (qkv[:, i * D : (i + 1) * D].reshape(t, H, hd) for i in range(3))
    ang = np.arange(t)[:, None] * 10000.0 ** (-2 * np.arange(hd // 2) / hd)
    c, s = np.cos(ang)[:, None], np.sin(ang)[:, None]

    def rope(z):
        out = np.empty_like(z)
        out[..., 0::2] = z[..., 0::2] * c - z[..., 1::2] * s
        out[..., 1::2] = z[..., 0::2] * s + z[..., 1::2] * c
        return out

    q, k = rope(q), rope(k)
    delta = np.arange(t)[:, None] - np.arange(t)[None, :]
    allowed = (delta >= 0) & ((delta < context) if context else True)
    scores = np.einsum("shd,thd->hst", q, k) / math.sqrt(hd)
    scores = np.where(allowed[None], scores, -np.inf)
    prob = np.exp(scores - scores.max(-1, keepdims=True))
    prob /= prob.sum(-1, keepdims=True)
    att = np.einsum("hst,thd->shd", prob, v).reshape(t, D) @ w["self_attn.out_proj.weight"].T
    x = x + w["layer_scale_1.scale"] * att
    h = ln(x, w["norm2.weight"], w["norm2.bias"]) @ w["linear1.weight"].T
    h = 0.5 * h * (1 + erf(h / math.sqrt(2)))
    return x + w["layer_scale_2.scale"] * (h @ w["linear2.weight"].T)


def test_attention_window_batch_matches_reference():
    rng = np.random.default_rng(0)
    w = _random_transformer_weights(rng)
    x = rng.standard_normal((600, D)).astype(np.float32)
    be = NumpyBackend()
    got = be.to_numpy(MimiTransformer(Weights(be, w), "tr", _tc())(be, be.asarray(x)))
    want = _reference_layer(w, x.astype(np.float64), CTX)
    np.testing.assert_allclose(got, want, atol=2e-4, rtol=0)
    unwindowed = _reference_layer(w, x.astype(np.float64), None)
    assert np.abs(got[:CTX] - unwindowed[:CTX]).max() < 2e-4  # identical before the window fills
    assert np.abs(got[CTX:] - unwindowed[CTX:]).max() > 1e-2  # the window matters after


def test_attention_window_streaming_equals_batch():
    rng = np.random.default_rng(1)
    w = _random_transformer_weights(rng)
    x = rng.standard_normal((600, D)).astype(np.float32)
    be = NumpyBackend()
    tr = MimiTransformer(Weights(be, w), "tr", _tc())
    batch = be.to_numpy(tr(be, be.asarray(x)))
    st, outs, t = tr.new_state(be), [], 0
    for k in [1, 2, 260, 7, 100, 230]:  # includes a chunk longer than the ring
        outs.append(be.to_numpy(tr.step(be, be.asarray(x[t : t + k]), st)))
        t += k
    np.testing.assert_allclose(np.concatenate(outs), batch, atol=1e-5, rtol=0)


def test_long_decode_streaming_equals_batch(mimi):
    """140 frames = 280 decoder-transformer steps, past the 250-step window."""
    codes = np.random.default_rng(2).integers(0, 2048, (32, 140))
    batch = mimi.decode(codes)
    dec, parts, t = mimi.stream_decoder(), [], 0
    for k in [1, 2, 128, 1, 8]:
        parts.append(dec.step(codes[:, t : t + k]))
        t += k
    np.testing.assert_allclose(np.concatenate(parts), batch, atol=1e-5, rtol=0)


def test_long_encode_streaming_equals_batch(mimi):
    """12 s of audio = 300 encoder-transformer steps."""
    rng = np.random.default_rng(3)
    wave = np.cumsum(rng.standard_normal(150 * 1920)).astype(np.float32) * 0.01
    enc = mimi.stream_encoder()
    streamed = np.concatenate([enc.step(wave[i : i + 48000]) for i in range(0, wave.size, 48000)], 1)
    np.testing.assert_array_equal(streamed, mimi.encode(wave))
