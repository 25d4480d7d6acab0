"""A Llama-3-style transformer on the backend contract (torchtune's layer, exactly).

Pre-norm layers ``h = x + attn(rms(x)); out = h + mlp(rms(h))`` with grouped-query attention,
RoPE (Llama-3 scaled) applied before the KV cache, SwiGLU ``w2(silu(w1 x) * w3 x)``, no biases,
and a final RMSNorm. The KV cache is written sequentially from slot 0, as torchtune's is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..backends.base import Backend, Tensor, matmul_rows
from ..errors import FormatError, GenerationError
from ..tensors import float32_values, stack_rows
from .config import LlamaConfig

LAYER_TENSORS = {
    "q": "attn.q_proj.weight",
    "k": "attn.k_proj.weight",
    "v": "attn.v_proj.weight",
    "o": "attn.output_proj.weight",
    "w1": "mlp.w1.weight",
    "w2": "mlp.w2.weight",
    "w3": "mlp.w3.weight",
    "sa_norm": "sa_norm.scale",
    "mlp_norm": "mlp_norm.scale",
}


def expected_shapes(cfg: LlamaConfig, prefix: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a stack saved under ``prefix`` (``backbone``...)."""
    d, hd = cfg.embed_dim, cfg.head_dim
    per = {
        "q": (cfg.num_heads * hd, d),
        "k": (cfg.num_kv_heads * hd, d),
        "v": (cfg.num_kv_heads * hd, d),
        "o": (d, cfg.num_heads * hd),
        "w1": (cfg.intermediate_dim, d),
        "w2": (d, cfg.intermediate_dim),
        "w3": (cfg.intermediate_dim, d),
        "sa_norm": (d,),
        "mlp_norm": (d,),
    }
    out = {f"{prefix}.layers.{i}.{LAYER_TENSORS[k]}": s for i in range(cfg.num_layers) for k, s in per.items()}
    out[f"{prefix}.norm.scale"] = (d,)
    return out


def fuse_projections(w: dict[str, Any], name: str = "") -> dict[str, Any]:
    """A layer's stored weights with q/k/v stacked into ``qkv`` (biases into ``bqkv``) and
    w1/w3 into ``w13`` where their types allow: one matrix product instead of three (or two),
    with the same results, as each output row is computed alone."""
    out = dict(w)
    qkv = stack_rows(name + "qkv", [w["q"], w["k"], w["v"]])
    biases = [w.get("b" + n) for n in "qkv"]
    if qkv is not None and (all(b is None for b in biases) or all(b is not None for b in biases)):
        for n in "qkv":
            out.pop(n)
            out.pop("b" + n, None)
        out["qkv"] = qkv
        if biases[0] is not None:
            out["bqkv"] = np.concatenate([float32_values(b).reshape(-1) for b in biases])
    w13 = stack_rows(name + "w13", [w["w1"], w["w3"]])
    if w13 is not None:
        out.pop("w1")
        out.pop("w3")
        out["w13"] = w13
    return out


def check_shapes(tensors: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Every expected tensor exists with the expected shape (before anything is computed)."""
    for name, shape in shapes.items():
        if name not in tensors:
            raise FormatError(
                f"{where}: tensor {name!r} is missing", "the checkpoint is incomplete or for a different model flavour"
            )
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise FormatError(
                f"{where}: tensor {name!r} has shape {list(got)}, expected {list(shape)}",
                "the config.json flavour does not match the weights",
            )


@dataclass(frozen=True)
class LayerOptions:
    """What newer Llama-family text models change in the layers (the defaults are Llama's own):

    - q/k RMS norms over each head before RoPE (``q_norm``/``k_norm`` weights: Qwen3, Gemma 3)
      and norms after attention and after the MLP (``post_attn_norm``, ``post_ffn_norm``:
      Gemma 3) come with the layer weights; these options say the rest:
    - layers without RoPE (SmolLM3's every fourth layer);
    - sliding-window layers: a query at position ``p`` sees positions ``p - window + 1 .. p``,
      with their own RoPE frequencies (Gemma 3's local layers);
    - an attention scale other than ``1/sqrt(head_dim)``;
    - Llama 4 attention temperature (Mistral 3): queries multiplied by
      ``1 + beta * log(1 + floor(pos / length))``.
    """

    no_rope: tuple[int, ...] = ()  # layers that skip RoPE
    sliding: tuple[int, ...] = ()  # layers that attend over a sliding window
    window: int = 0  # the sliding window, in positions (the current one included)
    attn_scale: float | None = None  # None: 1/sqrt(head_dim)
    temperature: tuple[float, int] | None = None  # (beta, length) of Llama 4 attention temperature

    @property
    def has_sliding(self) -> bool:
        return bool(self.sliding) and self.window > 0


# attention of one layer: (q, the layer's cached K, its cached V, whether the layer is a
# sliding-window one) -> [rows, heads * head_dim]
Attend = Callable[[Tensor, Tensor, Tensor, bool], Tensor]


def causal_mask(positions: np.ndarray, window: int) -> np.ndarray:
    """Additive float32 mask ``[S, window]``: cache slot ``j`` is visible to the query at position
    ``p`` iff ``j <= p`` (torchtune's ``tril(max_seq_len)[pos]``; slots past the end are hidden)."""
    return np.where(np.arange(window)[None, :] <= np.asarray(positions)[:, None], 0.0, -np.inf).astype(np.float32)


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


class KVCache:
    """Preallocated per-layer K/V buffers ``[capacity, kv_heads, head_dim]`` in the backend,
    stored as ``dtype`` (``float32``, or ``float16`` as llama.cpp keeps text-model caches)."""

    def __init__(
        self, be: Backend, cfg: LlamaConfig, capacity: int, dtype: str = "float32", window_multiple: int = 1
    ) -> None:
        shape = (capacity, cfg.num_kv_heads, cfg.head_dim)
        self.be = be
        self.window_multiple = window_multiple  # attention reads whole multiples of this many rows
        self.full_hint = "shorten the text or context, or lower --max-audio-ms"  # said when it overflows
        self.k = [be.zeros(shape, dtype) for _ in range(cfg.num_layers)]
        self.v = [be.zeros(shape, dtype) for _ in range(cfg.num_layers)]
        self.dtype = dtype
        self.capacity = capacity
        self.length = 0
        self.steps: dict[Any, Any] = {}  # step graphs a backend captured on these buffers

    def reset(self) -> None:
        """Rewind; stale rows are masked out of every read."""
        self.length = 0

    def check_room(self, end: int) -> None:
        """`GenerationError` unless the cache can hold ``end`` positions."""
        if end > self.capacity:
            raise GenerationError(f"sequence of {end} positions exceeds the context of {self.capacity}", self.full_hint)

    def read_rows(self, n: int, start: int = 0) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """Host copies of ``n`` rows from ``start`` of every layer's K and V (as float32 values)."""
        be = self.be
        return (
            [be.to_numpy(be.slice(k, 0, start, start + n)).copy() for k in self.k],
            [be.to_numpy(be.slice(v, 0, start, start + n)).copy() for v in self.v],
        )

    def write_rows(self, k: list[np.ndarray], v: list[np.ndarray], at: int = 0) -> None:
        """Store rows taken by `read_rows` at row ``at`` and set ``length`` to the end of them. A
        graph backend may apply the writes with its next computation over these buffers."""
        be, n = self.be, len(k[0])
        self.check_room(at + n)
        for i, (ki, vi) in enumerate(zip(k, v)):
            self.k[i] = be.write(self.k[i], be.asarray(np.ascontiguousarray(ki, np.float32)), at)
            self.v[i] = be.write(self.v[i], be.asarray(np.ascontiguousarray(vi, np.float32)), at)
        self.length = at + n

    def window(self, end: int) -> int:
        """Rows attention reads when the cache holds ``end``: ``end`` rounded up to a multiple of
        ``window_multiple`` (at most the capacity). Hidden rows cost compute but let a captured
        step serve many lengths, and match llama.cpp, which pads its KV view to 256 rows."""
        m = self.window_multiple
        return min(self.capacity, -(-end // m) * m)


class Llama:
    """The transformer stack: ``forward(x [S, d], positions) -> hidden [S, d]`` (post-norm).

    ``layers`` hold backend weights under the keys of `LAYER_TENSORS` plus optional q/k/v biases
    ``bq``, ``bk``, ``bv``, and where ``options`` ask for them q/k norms (``q_norm``,
    ``k_norm``) and post norms (``post_attn_norm``, ``post_ffn_norm``); ``freqs`` overrides the
    RoPE frequencies (e.g. from a GGUF's ``rope_freqs`` factors), ``local_freqs`` and
    ``local_base`` are those of sliding-window layers."""

    def __init__(
        self,
        be: Backend,
        cfg: LlamaConfig,
        layers: list[dict[str, Tensor]],
        norm: Tensor,
        freqs: np.ndarray | None = None,
        options: LayerOptions = LayerOptions(),
        local_freqs: np.ndarray | None = None,
        local_base: float | None = None,
    ) -> None:
        self.be, self.cfg, self.layers, self.norm = be, cfg, layers, norm
        self.freqs = cfg.rope_freqs() if freqs is None else np.asarray(freqs, np.float32)
        # plain RoPE (no scaling, no per-pair factors): backends with a fused kernel derive the
        # frequencies from the base themselves, bit for bit as llama.cpp does
        self.rope_base = cfg.rope_base if freqs is None and cfg.scale_factor is None else None
        self.options = options
        self.scale = 1.0 / float(np.sqrt(cfg.head_dim)) if options.attn_scale is None else float(options.attn_scale)
        self.local_freqs = self.freqs if local_freqs is None else np.asarray(local_freqs, np.float32)
        self.local_base = local_base if local_freqs is not None else self.rope_base

    @classmethod
    def from_torchtune(cls, be: Backend, cfg: LlamaConfig, tensors: Mapping[str, Any], prefix: str) -> Llama:
        """The stack saved under ``prefix`` with torchtune's names (CSM's checkpoint)."""
        check_shapes(tensors, expected_shapes(cfg, prefix), prefix)
        layers = [
            {
                k: be.weight(t)
                for k, t in fuse_projections(
                    {k: tensors[f"{prefix}.layers.{i}.{n}"] for k, n in LAYER_TENSORS.items()}, f"{prefix}.{i}."
                ).items()
            }
            for i in range(cfg.num_layers)
        ]
        return cls(be, cfg, layers, be.weight(tensors[f"{prefix}.norm.scale"]))

    def new_cache(self, capacity: int | None = None, dtype: str = "float32", window_multiple: int = 1) -> KVCache:
        return KVCache(self.be, self.cfg, capacity or self.cfg.max_seq_len, dtype, window_multiple)

    def inputs(self, positions: np.ndarray, window: int) -> list[np.ndarray]:
        """The per-call inputs besides ids and positions: the causal mask ``[S, window]``, then
        the sliding-window mask and the query temperature ``[S, 1, 1]`` where the model has them."""
        out = [causal_mask(positions, window)]
        if self.options.has_sliding:
            out.append(sliding_mask(positions, window, self.options.window))
        if self.options.temperature is not None:
            out.append(temperature_scale(positions, *self.options.temperature))
        return out

    def forward(
        self, x: Tensor, positions: np.ndarray, cache: KVCache, trace: Callable[[str, Tensor], None] | None = None
    ) -> Tensor:
        """Run ``x [S, d]`` at ``positions [S]``, appending to ``cache``; returns the final-norm output."""
        be = self.be
        s = len(positions)
        start, end = cache.length, cache.length + s
        cache.check_room(end)
        window = cache.window(end)
        pos = be.asarray(np.asarray(positions, np.int32))
        inputs = [be.asarray(a) for a in self.inputs(np.asarray(positions), window)]
        out = self._run(x, pos, start, inputs, window, cache, trace)
        cache.length = end
        return out

    def step(self, x: Tensor, pos: Tensor, *inputs: Tensor, cache: KVCache, window: int) -> Tensor:
        """One position ``pos [1]`` given as a tensor, written at cache row ``pos`` and attending
        over the first ``window`` rows under ``inputs`` (as `inputs` makes them): every input is a
        tensor, so a backend can capture the step once per window and replay it (the caller sets
        ``cache.length``)."""
        return self._run(x, pos, pos, list(inputs), window, cache, None)

    def _run(
        self,
        x: Tensor,
        pos: Tensor,
        rows: int | Tensor,
        inputs: list[Tensor],
        window: int,
        cache: KVCache,
        trace: Callable[[str, Tensor], None] | None,
    ) -> Tensor:
        """One stream over the first ``window`` cache rows, under the masks of ``inputs``."""
        be, hd, h = self.be, self.cfg.head_dim, self.cfg.num_heads
        mask, local_mask, qscale = self._split_inputs(inputs)

        def attend(q: Tensor, kb: Tensor, vb: Tensor, local: bool) -> Tensor:
            kk, vv = be.slice(kb, 0, 0, window), be.slice(vb, 0, 0, window)
            m = local_mask if local and local_mask is not None else mask
            return be.reshape(be.attention(q, kk, vv, m, self.scale), (be.shape(q)[0], h * hd))

        return self._layers(x, pos, rows, attend, cache, trace, qscale=qscale)

    def _split_inputs(self, inputs: list[Tensor]) -> tuple[Tensor, Tensor | None, Tensor | None]:
        """(causal mask, sliding mask or None, query temperature or None) from `inputs`' list."""
        rest = list(inputs[1:])
        local = rest.pop(0) if self.options.has_sliding else None
        qscale = rest.pop(0) if self.options.temperature is not None else None
        return inputs[0], local, qscale

    def batch_step(
        self, x: Tensor, pos: Tensor, rows: Tensor, inputs: list[list[Tensor]], cache: KVCache, starts: list[int]
    ) -> Tensor:
        """Several streams at once: ``x [B*S, d]`` holds ``S`` rows of each of ``B`` streams at
        ``pos``, written at cache rows ``rows`` (both ``[B*S]`` tensors). Stream ``b`` owns the
        cache rows from ``starts[b]`` and attends over the next ``window`` of them under
        ``inputs[b]`` (as `inputs` makes them, the causal mask ``[S, window]`` first). Products
        go through ``matmul_rows`` where the backend has it, so each stream gets exactly what it
        gets alone."""
        be = self.be
        s = be.shape(x)[0] // len(starts)
        hd, h = self.cfg.head_dim, self.cfg.num_heads
        split = [self._split_inputs(i) for i in inputs]
        windows = [be.shape(m)[1] for m, _, _ in split]

        def attend(q: Tensor, kb: Tensor, vb: Tensor, local: bool) -> Tensor:
            outs = []
            for b, (start, window, (mask, local_mask, _)) in enumerate(zip(starts, windows, split)):
                qb = be.slice(q, 0, b * s, (b + 1) * s)
                kk, vv = be.slice(kb, 0, start, start + window), be.slice(vb, 0, start, start + window)
                m = local_mask if local and local_mask is not None else mask
                outs.append(be.reshape(be.attention(qb, kk, vv, m, self.scale), (s, h * hd)))
            return outs[0] if len(outs) == 1 else be.concat(outs, axis=0)

        scales = [q for _, _, q in split]
        qscale = None if scales[0] is None else scales[0] if len(scales) == 1 else be.concat(scales, axis=0)
        return self._layers(x, pos, rows, attend, cache, None, partial(matmul_rows, be, group=s), qscale)

    def _layers(
        self,
        x: Tensor,
        pos: Tensor,
        rows: int | Tensor,
        attend: Attend,
        cache: KVCache,
        trace: Callable[[str, Tensor], None] | None,
        mm: Callable[[Tensor, Tensor], Tensor] | None = None,
        qscale: Tensor | None = None,
    ) -> Tensor:
        """Every layer over ``x``, K/V written at cache ``rows``, attention through ``attend``,
        products through ``mm`` (default ``be.matmul``), queries scaled by ``qscale`` if given."""
        be, cfg, opt = self.be, self.cfg, self.options
        mm = mm or be.matmul
        s = be.shape(x)[0]
        hd, h, kvh = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        for i, w in enumerate(self.layers):
            local = opt.has_sliding and i in opt.sliding
            hn = be.rms_norm(x, w["sa_norm"], cfg.norm_eps)
            if "qkv" in w:
                qkv = self._proj(hn, w, "qkv", mm)
                nq, nk = h * hd, kvh * hd
                q, k, v = (be.slice(qkv, -1, a, b) for a, b in ((0, nq), (nq, nq + nk), (nq + nk, nq + 2 * nk)))
            else:
                q, k, v = (self._proj(hn, w, n, mm) for n in "qkv")
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
            out = mm(attend(q, cache.k[i], cache.v[i], local), w["o"])
            if "post_attn_norm" in w:
                out = be.rms_norm(out, w["post_attn_norm"], cfg.norm_eps)
            x = be.add(x, out)
            hn = be.rms_norm(x, w["mlp_norm"], cfg.norm_eps)
            if "w13" in w:
                gu = mm(hn, w["w13"])
                f = cfg.intermediate_dim
                gate, up = be.slice(gu, -1, 0, f), be.slice(gu, -1, f, 2 * f)
            else:
                gate, up = mm(hn, w["w1"]), mm(hn, w["w3"])
            ff = be.swiglu(gate, up) if cfg.activation == "silu" else be.mul(be.gelu(gate, approximate=True), up)
            out = mm(ff, w["w2"])
            if "post_ffn_norm" in w:
                out = be.rms_norm(out, w["post_ffn_norm"], cfg.norm_eps)
            x = be.add(x, out)
            if trace is not None:
                trace(f"layer{i}_out", x)
        return be.rms_norm(x, self.norm, cfg.norm_eps)

    def _proj(
        self, x: Tensor, w: dict[str, Tensor], name: str, mm: Callable[[Tensor, Tensor], Tensor] | None = None
    ) -> Tensor:
        y = (mm or self.be.matmul)(x, w[name])
        bias = w.get("b" + name)
        return y if bias is None else self.be.add(y, bias)
