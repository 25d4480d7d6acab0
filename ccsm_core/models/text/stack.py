"""The text models' transformer stack: the Llama stack plus what newer architectures add per layer.

- q/k RMS norms over each head before RoPE (``q_norm``/``k_norm`` weights: Qwen3, Gemma 3);
- norms after attention and after the MLP, before the residual add (``post_attn_norm``,
  ``post_ffn_norm``: Gemma 3);
- layers without RoPE (SmolLM3's every fourth layer);
- sliding-window layers: a query at position ``p`` sees positions ``p - window + 1 .. p``, with
  their own RoPE frequencies (Gemma 3's local layers);
- an attention scale other than ``1/sqrt(head_dim)``;
- Llama 4 attention temperature (Mistral 3): queries multiplied by
  ``1 + beta * log(1 + floor(pos / length))``.

A model without any of these computes exactly what `Llama` computes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ...backends.base import Backend, Tensor
from ..config import LlamaConfig
from ..llama import KVCache, Llama, causal_mask


@dataclass(frozen=True)
class LayerOptions:
    """What differs between a text model's layers, and its attention scale."""

    no_rope: tuple[int, ...] = ()  # layers that skip RoPE
    sliding: tuple[int, ...] = ()  # layers that attend over a sliding window
    window: int = 0  # the sliding window, in positions (the current one included)
    attn_scale: float | None = None  # None: 1/sqrt(head_dim)
    temperature: tuple[float, int] | None = None  # (beta, length) of Llama 4 attention temperature

    @property
    def has_sliding(self) -> bool:
        return bool(self.sliding) and self.window > 0


def sliding_mask(positions: np.ndarray, window: int, size: int) -> np.ndarray:
    """Additive float32 mask ``[S, window rows]``: slot ``j`` visible to position ``p`` iff
    ``p - size < j <= p`` (llama.cpp's standard sliding window)."""
    p = np.asarray(positions)[:, None]
    j = np.arange(window)[None, :]
    return np.where((j <= p) & (p - j < size), 0.0, -np.inf).astype(np.float32)


def temperature_scale(positions: np.ndarray, beta: float, length: int) -> np.ndarray:
    """Per-position query scale ``[S, 1, 1]`` of Llama 4's attention temperature."""
    pos = np.asarray(positions, np.float64)
    return (1.0 + beta * np.log1p(np.floor(pos / length))).astype(np.float32).reshape(-1, 1, 1)


class TextStack(Llama):
    """`Llama` with `LayerOptions` and, optionally, q/k norms and post norms in the layer
    weights; ``local_freqs`` are the RoPE frequencies of sliding-window layers."""

    def __init__(
        self,
        be: Backend,
        cfg: LlamaConfig,
        layers: list[dict[str, Tensor]],
        norm: Tensor,
        options: LayerOptions,
        freqs: np.ndarray | None = None,
        local_freqs: np.ndarray | None = None,
        local_base: float | None = None,
    ) -> None:
        super().__init__(be, cfg, layers, norm, freqs)
        self.options = options
        if options.attn_scale is not None:
            self.scale = float(options.attn_scale)
        self.local_freqs = self.freqs if local_freqs is None else np.asarray(local_freqs, np.float32)
        self.local_base = local_base if local_freqs is not None else self.rope_base

    def inputs(self, positions: np.ndarray, window: int) -> list[np.ndarray]:
        """The per-call inputs besides ids and positions: the causal mask, then the sliding mask
        and the query temperature where the model has them."""
        out = [causal_mask(positions, window)]
        if self.options.has_sliding:
            out.append(sliding_mask(positions, window, self.options.window))
        if self.options.temperature is not None:
            out.append(temperature_scale(positions, *self.options.temperature))
        return out

    def forward(
        self, x: Tensor, positions: np.ndarray, cache: KVCache, trace: Callable[[str, Tensor], None] | None = None
    ) -> Tensor:
        be = self.be
        s = len(positions)
        start, end = cache.length, cache.length + s
        cache.check_room(end)
        window = cache.window(end)
        pos = be.asarray(np.asarray(positions, np.int32))
        extra = [be.asarray(a) for a in self.inputs(np.asarray(positions), window)]
        out = self._run(x, pos, start, extra, window, cache, trace)
        cache.length = end
        return out

    def step(self, x: Tensor, pos: Tensor, *inputs: Tensor, cache: KVCache, window: int) -> Tensor:  # type: ignore[override]
        """One position given as tensors (``inputs`` as `inputs` makes them), written at cache
        row ``pos``; the caller sets ``cache.length``."""
        return self._run(x, pos, pos, list(inputs), window, cache, None)

    def _run(
        self,
        x: Tensor,
        pos: Tensor,
        rows: int | Tensor,
        inputs: Sequence[Tensor],
        window: int,
        cache: KVCache,
        trace: Callable[[str, Tensor], None] | None,
    ) -> Tensor:
        be, cfg, opt = self.be, self.cfg, self.options
        mask, rest = inputs[0], list(inputs[1:])
        local_mask = rest.pop(0) if opt.has_sliding else mask
        qscale = rest.pop(0) if opt.temperature is not None else None
        s = be.shape(x)[0]
        hd, h, kvh = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        for i, w in enumerate(self.layers):
            local = opt.has_sliding and i in opt.sliding
            hn = be.rms_norm(x, w["sa_norm"], cfg.norm_eps)
            if "qkv" in w:
                qkv = self._proj(hn, w, "qkv")
                nq, nk = h * hd, kvh * hd
                q, k, v = (be.slice(qkv, -1, a, b) for a, b in ((0, nq), (nq, nq + nk), (nq + nk, nq + 2 * nk)))
            else:
                q, k, v = (self._proj(hn, w, n) for n in "qkv")
            q, k, v = be.reshape(q, (s, h, hd)), be.reshape(k, (s, kvh, hd)), be.reshape(v, (s, kvh, hd))
            if "q_norm" in w:
                q = be.rms_norm(q, w["q_norm"], cfg.norm_eps)
                k = be.rms_norm(k, w["k_norm"], cfg.norm_eps)
            if i not in opt.no_rope:
                freqs, base = (self.local_freqs, self.local_base) if local else (self.freqs, self.rope_base)
                q = be.rope(q, pos, freqs, cfg.rope_interleaved, base=base)
                k = be.rope(k, pos, freqs, cfg.rope_interleaved, base=base)
            if qscale is not None:
                q = be.mul(q, qscale)
            cache.k[i] = be.write(cache.k[i], k, rows)
            cache.v[i] = be.write(cache.v[i], v, rows)
            kk = be.slice(cache.k[i], 0, 0, window)
            vv = be.slice(cache.v[i], 0, 0, window)
            att = be.attention(q, kk, vv, local_mask if local else mask, self.scale)
            out = be.matmul(be.reshape(att, (s, h * hd)), w["o"])
            if "post_attn_norm" in w:
                out = be.rms_norm(out, w["post_attn_norm"], cfg.norm_eps)
            x = be.add(x, out)
            hn = be.rms_norm(x, w["mlp_norm"], cfg.norm_eps)
            if "w13" in w:
                gu = be.matmul(hn, w["w13"])
                f = cfg.intermediate_dim
                gate, up = be.slice(gu, -1, 0, f), be.slice(gu, -1, f, 2 * f)
            else:
                gate, up = be.matmul(hn, w["w1"]), be.matmul(hn, w["w3"])
            ff = be.swiglu(gate, up) if cfg.activation == "silu" else be.mul(be.gelu(gate, approximate=True), up)
            out = be.matmul(ff, w["w2"])
            if "post_ffn_norm" in w:
                out = be.rms_norm(out, w["post_ffn_norm"], cfg.norm_eps)
            x = be.add(x, out)
            if trace is not None:
                trace(f"layer{i}_out", x)
        return be.rms_norm(x, self.norm, cfg.norm_eps)
