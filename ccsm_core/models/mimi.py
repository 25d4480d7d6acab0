"""Mimi, kyutai's neural audio codec (moshi 0.2.2), written against the backend contract.

24 kHz mono audio <-> 32 codebooks of 2048 entries at 12.5 frames per second (1920 samples a
frame). Encode: SEANet encoder (25 Hz) -> causal transformer -> strided conv (12.5 Hz) -> split
RVQ (codebook argmin on the host). Decode: RVQ sums -> depthwise transposed conv (25 Hz) ->
causal transformer -> SEANet decoder. ``stream_decoder()`` / ``stream_encoder()`` carry every
causal layer's state so streamed results equal one-shot results.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from functools import partial
from typing import Any

import numpy as np

from ..errors import ModelError, UsageError
from .mimi_layers import CausalConv1d, CausalConvTranspose1d, Weights, seanet_decoder, seanet_encoder
from .mimi_schema import check_mimi, check_sections
from .mimi_transformer import MimiTransformer

Tensor = Any

DEFAULT_MIMI_CONFIG: dict = {
    "seanet": {
        "channels": 1,
        "dimension": 512,
        "causal": True,
        "n_filters": 64,
        "n_residual_layers": 1,
        "activation": "ELU",
        "compress": 2,
        "dilation_base": 2,
        "disable_norm_outer_blocks": 0,
        "kernel_size": 7,
        "residual_kernel_size": 3,
        "last_kernel_size": 3,
        "norm": "none",
        "pad_mode": "constant",
        "ratios": [8, 6, 5, 4],
        "true_skip": True,
    },
    "transformer": {
        "d_model": 512,
        "num_heads": 8,
        "num_layers": 8,
        "causal": True,
        "layer_scale": 0.01,
        "context": 250,
        "conv_layout": True,
        "max_period": 10000,
        "gating": "none",
        "norm": "layer_norm",
        "positional_embedding": "rope",
        "dim_feedforward": 2048,
        "input_dimension": 512,
        "output_dimensions": [512],
    },
    "quantizer": {"dimension": 256, "n_q": 32, "bins": 2048, "input_dimension": 512, "output_dimension": 512},
    "sample_rate": 24000,
    "frame_rate": 12.5,
    "encoder_frame_rate": 25.0,
    "num_codebooks": 32,
}
"""moshi's constructor arguments for the released Mimi (its checkpoint carries no config)."""

_REQUIRED = {
    ("seanet", "causal"): True,
    ("seanet", "norm"): "none",
    ("seanet", "true_skip"): True,
    ("seanet", "activation"): "ELU",
    ("transformer", "causal"): True,
    ("transformer", "norm"): "layer_norm",
    ("transformer", "gating"): "none",
    ("transformer", "positional_embedding"): "rope",
}


def mimi_config(config: Mapping | None = None) -> dict:
    """``DEFAULT_MIMI_CONFIG`` updated with ``config`` (moshi constructor args), validated."""
    cfg = copy.deepcopy(DEFAULT_MIMI_CONFIG)
    for key, val in check_sections(config or {}, "Mimi config").items():
        if isinstance(val, Mapping) and isinstance(cfg.get(key), dict):
            cfg[key].update(val)
        else:
            cfg[key] = val
    check_mimi(cfg)
    for (sec, key), want in _REQUIRED.items():
        if cfg[sec].get(key) != want:
            raise ModelError(
                f"Mimi config: {sec}.{key} = {cfg[sec].get(key)!r} is not supported (only {want!r})",
                "use a moshi Mimi config",
            )
    if cfg["seanet"].get("lstm", 0) or cfg["seanet"]["pad_mode"] not in ("constant", "replicate"):
        raise ModelError("Mimi config: SEANet LSTM / pad mode not supported", "use a moshi Mimi config")
    if not 1 <= cfg["num_codebooks"] <= cfg["quantizer"]["n_q"]:
        raise ModelError(
            f"Mimi config: num_codebooks {cfg['num_codebooks']} is not in 1..{cfg['quantizer']['n_q']}",
            "use a moshi Mimi config",
        )
    return cfg


class SplitRVQ:
    """moshi ``SplitResidualVectorQuantizer``: 1 semantic codebook + ``n_q - 1`` acoustic ones.

    Both halves quantise the same latent; decode sums their projected codebook sums.
    """

    def __init__(self, ws: Weights, prefix: str, qc: dict, n_active: int) -> None:
        be = ws.be
        dim, din, dout, bins = qc["dimension"], qc["input_dimension"], qc["output_dimension"], qc["bins"]
        self.bins, self.n = bins, n_active
        self.codebooks = []  # host float32 [bins, dim] per codebook (for the encoder argmin)
        self.in_proj, self.out_proj, self.tables = [], [], []
        for half, count in (("rvq_first", 1), ("rvq_rest", n_active - 1)):
            if count <= 0:
                continue
            p = f"{prefix}.{half}"
            self.in_proj.append(be.weight(ws.host(p + ".input_proj.weight", (dim, din, 1))[..., 0]))
            self.out_proj.append(be.weight(ws.host(p + ".output_proj.weight", (dout, dim, 1))[..., 0]))
            books = []
            for i in range(count):
                c = f"{p}.vq.layers.{i}._codebook."
                s = ws.host(c + "embedding_sum", (bins, dim))
                u = ws.host(c + "cluster_usage", (bins,))
                books.append((s / np.maximum(u, np.float32(1e-5))[:, None]).astype(np.float32))
            self.codebooks += books
            self.tables.append(be.weight(np.concatenate(books, 0)))  # [count * bins, dim]

    def project(self, be: Any, latent: Tensor) -> list[Tensor]:
        """``latent [T, din]`` -> each half's input projection ``[T, dim]``."""
        return [be.matmul(latent, w) for w in self.in_proj]

    def quantize(self, projected: list[np.ndarray]) -> np.ndarray:
        """Host residual argmin (L2) within each half -> codes ``int64 [n, T]``."""
        codes = []
        stages = [(projected[0], self.codebooks[:1])]
        if self.n > 1:
            stages.append((projected[1], self.codebooks[1:]))
        for z, books in stages:
            r = np.asarray(z, np.float32)
            for book in books:
                r64, b64 = r.astype(np.float64), book.astype(np.float64)
                d2 = (r64 * r64).sum(1)[:, None] - 2 * r64 @ b64.T + (b64 * b64).sum(1)[None, :]
                idx = d2.argmin(1)
                codes.append(idx)
                r = r - book[idx]
        return np.stack(codes).astype(np.int64)

    def decode(self, be: Any, codes: np.ndarray) -> Tensor:
        """``codes [n, T]`` (validated) -> latent ``[T, dout]``."""
        return self.decode_ids(be, *(be.asarray(a) for a in self.ids(codes)))

    def ids(self, codes: np.ndarray) -> tuple[np.ndarray, ...]:
        """Table rows for ``codes [n, T]``: the first codebook's, then the others' (offset by
        codebook), as int32 host arrays."""
        first = codes[0].astype(np.int32)
        if self.n == 1:
            return (first,)
        rest = codes[1:] + (np.arange(self.n - 1, dtype=np.int64) * self.bins)[:, None]
        return first, rest.reshape(-1).astype(np.int32)

    def decode_ids(self, be: Any, first: Tensor, rest: Tensor | None = None) -> Tensor:
        """Latent ``[T, dout]`` from the rows `ids` gives (as tensors)."""
        t = be.shape(first)[0]
        out = be.matmul(be.embedding(self.tables[0], first), self.out_proj[0])
        if rest is not None:
            emb = be.embedding(self.tables[1], rest)
            summed = be.sum(be.reshape(emb, (self.n - 1, t, be.shape(emb)[-1])), 0)
            out = be.add(out, be.matmul(summed, self.out_proj[1]))
        return out


class Mimi:
    """The Mimi codec on one backend. Build with `Mimi.from_tensors` or `load_mimi`."""

    def __init__(self, be: Any, ws: Weights, cfg: dict) -> None:
        self.be, self.config = be, cfg
        sc, tc, qc = cfg["seanet"], cfg["transformer"], cfg["quantizer"]
        self.sample_rate = int(cfg["sample_rate"])
        self.frame_rate = float(cfg["frame_rate"])
        self.samples_per_frame = int(self.sample_rate / self.frame_rate)
        self.num_codebooks = int(cfg["num_codebooks"])
        self.cardinality = int(qc["bins"])
        hop = int(np.prod(sc["ratios"]))
        stride = int(cfg["encoder_frame_rate"] / self.frame_rate)
        if hop * stride != self.samples_per_frame or self.sample_rate / hop != cfg["encoder_frame_rate"]:
            raise ModelError(
                f"Mimi config: SEANet hop {hop} x resample stride {stride} does not "
                f"give {self.samples_per_frame} samples per frame",
                "use a moshi Mimi config",
            )
        dim = sc["dimension"]
        self.encoder = seanet_encoder(ws, "encoder", sc)
        self.encoder_transformer = MimiTransformer(ws, "encoder_transformer", tc)
        self.downsample = CausalConv1d.load(
            ws, "downsample.conv.conv.conv", dim, dim, 2 * stride, stride=stride, bias=False, pad_mode="replicate"
        )
        self.quantizer = SplitRVQ(ws, "quantizer", qc, self.num_codebooks)
        self.upsample = CausalConvTranspose1d.load(
            ws, "upsample.convtr.convtr.convtr", dim, dim, 2 * stride, stride, groups=dim, bias=False
        )
        self.decoder_transformer = MimiTransformer(ws, "decoder_transformer", tc)
        self.decoder = seanet_decoder(ws, "decoder", sc)

    @classmethod
    def from_tensors(cls, be: Any, tensors: Mapping[str, Any], config: Mapping | None = None) -> Mimi:
        """Build from ``name -> TensorData | ndarray`` (moshi names) and moshi constructor args."""
        return cls(be, Weights(be, tensors), mimi_config(config))

    # --- input checks ----------------------------------------------------------------------
    def _check_wave(self, wave: Any) -> np.ndarray:
        a = np.asarray(wave)
        if a.ndim == 3 and a.shape[:2] == (1, 1):
            a = a[0, 0]
        if a.ndim != 1:
            raise UsageError(
                f"Mimi expects mono audio of shape [N] or [1, 1, N], got shape {list(a.shape)}",
                "pass one channel of 24 kHz samples",
            )
        if a.dtype.kind not in "fiu":
            raise UsageError(
                f"Mimi expects numeric audio samples, got dtype {a.dtype}",
                "pass the audio as float samples",
            )
        a = a.astype(np.float32)
        if not np.isfinite(a).all():
            raise UsageError("audio contains NaN or infinite samples", "clean the audio first")
        return a

    def _check_codes(self, codes: Any) -> np.ndarray:
        c = np.asarray(codes)
        if c.ndim == 3 and c.shape[0] == 1:
            c = c[0]
        hint = f"pass integer codes of shape [{self.num_codebooks}, T] in 0..{self.cardinality - 1}"
        if c.ndim != 2:
            raise UsageError(
                f"Mimi codes must have shape [{self.num_codebooks}, T] or "
                f"[1, {self.num_codebooks}, T], got {list(c.shape)}",
                hint,
            )
        if c.shape[0] != self.num_codebooks:
            raise UsageError(f"Mimi codes have {c.shape[0]} codebooks, expected {self.num_codebooks}", hint)
        if c.dtype.kind not in "iu":
            raise UsageError(f"Mimi codes must be integers, got dtype {c.dtype}", hint)
        if c.size and (c.min() < 0 or c.max() >= self.cardinality):
            bad = c[(c < 0) | (c >= self.cardinality)][0]
            raise UsageError(f"Mimi code {int(bad)} is out of range 0..{self.cardinality - 1}", hint)
        return c.astype(np.int64)

    # --- batch -----------------------------------------------------------------------------
    def _latent(self, x: Tensor, enc: Any = None) -> Tensor:
        """``x [1, N]`` -> unquantized latent ``[T, D]`` (batch, or streaming with state ``enc``)."""
        be = self.be
        if enc is None:
            h = self.encoder(be, x)
            h = be.transpose(self.encoder_transformer(be, be.transpose(h, (1, 0))), (1, 0))
            h = self.downsample(be, h)
        else:
            h = self.encoder.step(be, x, enc[0])
            h = be.transpose(self.encoder_transformer.step(be, be.transpose(h, (1, 0)), enc[1]), (1, 0))
            h = self.downsample.step(be, h, enc[2])
        return be.transpose(h, (1, 0))

    def encode_latent(self, wave: Any) -> np.ndarray:
        """Unquantized latent ``float32 [D, ceil(N / 1920)]`` (moshi ``_encode_to_unquantized_latent``)."""
        a = self._check_wave(wave)
        if a.size == 0:
            raise UsageError("cannot encode empty audio", "give at least 80 ms of audio")
        return self.be.to_numpy(self.be.transpose(self._latent(self.be.asarray(a[None])), (1, 0)))

    def _codes_from_latent(self, lat: Tensor) -> np.ndarray:
        return self.quantizer.quantize([self.be.to_numpy(z) for z in self.quantizer.project(self.be, lat)])

    def encode(self, wave: Any) -> np.ndarray:
        """24 kHz samples ``[N]`` or ``[1, 1, N]`` -> codes ``int64 [num_codebooks, ceil(N / 1920)]``."""
        a = self._check_wave(wave)
        if a.size == 0:
            raise UsageError("cannot encode empty audio", "pass at least one sample")
        return self._codes_from_latent(self._latent(self.be.asarray(a[None])))

    def decode_latent(self, codes: Any) -> np.ndarray:
        """Codes ``[n, T]`` -> quantized latent ``float32 [D, T]`` (moshi ``decode_latent``)."""
        c = self._check_codes(codes)
        return self.be.to_numpy(self.be.transpose(self.quantizer.decode(self.be, c), (1, 0)))

    def _wave(self, c: np.ndarray, dec: Any = None) -> Tensor:
        be = self.be
        h = be.transpose(self.quantizer.decode(be, c), (1, 0))  # [D, T]
        if dec is None:
            h = self.upsample(be, h)
            h = be.transpose(self.decoder_transformer(be, be.transpose(h, (1, 0))), (1, 0))
            return self.decoder(be, h)
        h = self.upsample.step(be, h, dec[0])
        h = be.transpose(self.decoder_transformer.step(be, be.transpose(h, (1, 0)), dec[1]), (1, 0))
        return self.decoder.step(be, h, dec[2])

    def decode(self, codes: Any) -> np.ndarray:
        """Codes ``[n, T]`` or ``[1, n, T]`` -> 24 kHz audio ``float32 [T * 1920]``."""
        c = self._check_codes(codes)
        if c.shape[1] == 0:
            return np.zeros(0, np.float32)
        return self.be.to_numpy(self._wave(c))[0].astype(np.float32, copy=False)

    # --- streaming -------------------------------------------------------------------------
    def stream_decoder(self) -> MimiStreamDecoder:
        """A fresh streaming decoder (moshi ``with mimi.streaming(1): mimi.decode(...)``)."""
        return MimiStreamDecoder(self)

    def stream_encoder(self) -> MimiStreamEncoder:
        """A fresh streaming encoder (moshi ``with mimi.streaming(1): mimi.encode(...)``)."""
        return MimiStreamEncoder(self)


class MimiStreamDecoder:
    """Decodes codes chunk by chunk; the concatenated output equals `Mimi.decode` of all codes."""

    def __init__(self, mimi: Mimi) -> None:
        be = mimi.be
        self.mimi = mimi
        self.frames = 0
        self._state = (mimi.upsample.new_state(be), mimi.decoder_transformer.new_state(be), mimi.decoder.new_state(be))
        self._steps: dict[int, Any] = {}  # captured graphs by chunk length

    def step(self, codes: Any) -> np.ndarray:
        """Codes ``[n, k]`` (or ``[1, n, k]``) -> the next ``k * 1920`` samples.

        After the first chunk, backends that can capture replay one graph per chunk length: the
        transformer's positions, ring rows and mask are the step's only other inputs."""
        m = self.mimi
        c = m._check_codes(codes)
        if c.shape[1] == 0:
            return np.zeros(0, np.float32)
        capture = getattr(m.be, "capture", None)
        tr, st = m.decoder_transformer, self._state[1]
        ring = tr.ring_inputs(st, c.shape[1] * m.upsample.stride) if capture is not None and self.frames else None
        self.frames += c.shape[1]
        if ring is None or capture is None:  # ring is only computed when the backend can capture
            return m.be.to_numpy(m._wave(c, self._state))[0].astype(np.float32, copy=False)
        ids = m.quantizer.ids(c)
        step = self._steps.get(c.shape[1])
        if step is None:
            step = self._steps[c.shape[1]] = capture(partial(self._graph, n_ids=len(ids)), *ids, *ring)
        wave = step(*ids, *ring)[0]
        tr.advance(st, ring[0], ring[1])
        return wave[0]

    def _graph(self, *inputs: Tensor, n_ids: int) -> Tensor:
        m, be, (up, _, dec) = self.mimi, self.mimi.be, self._state
        h = be.transpose(m.quantizer.decode_ids(be, *inputs[:n_ids]), (1, 0))  # [D, T]
        h = m.upsample.step(be, h, up)
        pos, rows, mask = inputs[n_ids:]  # the ring inputs: positions, ring rows, mask
        x = m.decoder_transformer.step_in_place(be, be.transpose(h, (1, 0)), pos, rows, mask, self._state[1])
        return m.decoder.step(be, be.transpose(x, (1, 0)), dec)


class MimiStreamEncoder:
    """Encodes audio pushed in arbitrary pieces, one code frame per complete 1920 samples.

    Like moshi's streaming encode, a trailing partial frame is never encoded.
    """

    def __init__(self, mimi: Mimi) -> None:
        be = mimi.be
        self.mimi = mimi
        self._pending = np.zeros(0, np.float32)
        self._state = (
            mimi.encoder.new_state(be),
            mimi.encoder_transformer.new_state(be),
            mimi.downsample.new_state(be),
        )

    def step(self, wave: Any) -> np.ndarray:
        """Samples ``[N]`` -> codes ``int64 [n, k]`` for the ``k`` frames completed so far."""
        a = np.concatenate([self._pending, self.mimi._check_wave(wave)])
        spf = self.mimi.samples_per_frame
        k = a.size // spf
        self._pending = a[k * spf :]
        if k == 0:
            return np.zeros((self.mimi.num_codebooks, 0), np.int64)
        lat = self.mimi._latent(self.mimi.be.asarray(a[None, : k * spf]), self._state)
        return self.mimi._codes_from_latent(lat)
