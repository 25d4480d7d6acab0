"""A Llama-3-style transformer on the backend contract (torchtune's layer, exactly).

Pre-norm layers ``h = x + attn(rms(x)); out = h + mlp(rms(h))`` with grouped-query attention,
RoPE (Llama-3 scaled) applied before the KV cache, SwiGLU ``w2(silu(w1 x) * w3 x)``, no biases,
and a final RMSNorm. The KV cache is written sequentially from slot 0, as torchtune's is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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


def causal_mask(positions: np.ndarray, window: int) -> np.ndarray:
    """Additive float32 mask ``[S, window]``: cache slot ``j`` is visible to the query at position
    ``p`` iff ``j <= p`` (torchtune's ``tril(max_seq_len)[pos]``; slots past the end are hidden)."""
    return np.where(np.arange(window)[None, :] <= np.asarray(positions)[:, None], 0.0, -np.inf).astype(np.float32)


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
    ``bq``, ``bk``, ``bv``; ``freqs`` overrides the RoPE frequencies (e.g. from a GGUF's
    ``rope_freqs`` factors)."""

    def __init__(
        self,
        be: Backend,
        cfg: LlamaConfig,
        layers: list[dict[str, Tensor]],
        norm: Tensor,
        freqs: np.ndarray | None = None,
    ) -> None:
        self.be, self.cfg, self.layers, self.norm = be, cfg, layers, norm
        self.freqs = cfg.rope_freqs() if freqs is None else np.asarray(freqs, np.float32)
        # plain RoPE (no scaling, no per-pair factors): backends with a fused kernel derive the
        # frequencies from the base themselves, bit for bit as llama.cpp does
        self.rope_base = cfg.rope_base if freqs is None and cfg.scale_factor is None else None
        self.scale = 1.0 / float(np.sqrt(cfg.head_dim))

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
        mask = be.asarray(causal_mask(np.asarray(positions), window))
        out = self._layers(x, pos, start, self._attend_window(mask, window), cache, trace)
        cache.length = end
        return out

    def step(self, x: Tensor, pos: Tensor, mask: Tensor, cache: KVCache, window: int) -> Tensor:
        """One position ``pos [1]`` given as a tensor, written at cache row ``pos`` and attending
        over the first ``window`` rows under ``mask [1, window]``: every input is a tensor, so a
        backend can capture the step once per window and replay it (the caller sets
        ``cache.length``)."""
        return self._layers(x, pos, pos, self._attend_window(mask, window), cache, None)

    def batch_step(
        self, x: Tensor, pos: Tensor, rows: Tensor, masks: list[Tensor], cache: KVCache, starts: list[int]
    ) -> Tensor:
        """Several streams at once: ``x [B*S, d]`` holds ``S`` rows of each of ``B`` streams at
        ``pos``, written at cache rows ``rows`` (both ``[B*S]`` tensors). Stream ``b`` owns the
        cache rows from ``starts[b]`` and attends over the next ``masks[b].shape[1]`` of them
        under ``masks[b] [S, window]``. Products go through ``matmul_rows`` where the backend
        has it, so each stream gets exactly what it gets alone."""
        be = self.be
        s = be.shape(x)[0] // len(starts)
        windows = [be.shape(m)[1] for m in masks]
        hd, h = self.cfg.head_dim, self.cfg.num_heads

        def attend(q: Tensor, kb: Tensor, vb: Tensor) -> Tensor:
            outs = []
            for b, (start, window, mask) in enumerate(zip(starts, windows, masks)):
                qb = be.slice(q, 0, b * s, (b + 1) * s)
                kk, vv = be.slice(kb, 0, start, start + window), be.slice(vb, 0, start, start + window)
                outs.append(be.reshape(be.attention(qb, kk, vv, mask, self.scale), (s, h * hd)))
            return outs[0] if len(outs) == 1 else be.concat(outs, axis=0)

        return self._layers(x, pos, rows, attend, cache, None, partial(matmul_rows, be, group=s))

    def _attend_window(self, mask: Tensor, window: int) -> Callable[[Tensor, Tensor, Tensor], Tensor]:
        """Attention of one stream over the first ``window`` cache rows under ``mask``."""
        be, hd, h = self.be, self.cfg.head_dim, self.cfg.num_heads

        def attend(q: Tensor, kb: Tensor, vb: Tensor) -> Tensor:
            kk, vv = be.slice(kb, 0, 0, window), be.slice(vb, 0, 0, window)
            return be.reshape(be.attention(q, kk, vv, mask, self.scale), (be.shape(q)[0], h * hd))

        return attend

    def _layers(
        self,
        x: Tensor,
        pos: Tensor,
        rows: int | Tensor,
        attend: Callable[[Tensor, Tensor, Tensor], Tensor],
        cache: KVCache,
        trace: Callable[[str, Tensor], None] | None,
        mm: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> Tensor:
        be, cfg = self.be, self.cfg
        mm = mm or be.matmul
        s = be.shape(x)[0]
        hd, h, kvh = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        for i, w in enumerate(self.layers):
            hn = be.rms_norm(x, w["sa_norm"], cfg.norm_eps)
            if "qkv" in w:
                qkv = self._proj(hn, w, "qkv", mm)
                nq, nk = h * hd, kvh * hd
                q, k, v = (be.slice(qkv, -1, a, b) for a, b in ((0, nq), (nq, nq + nk), (nq + nk, nq + 2 * nk)))
            else:
                q, k, v = (self._proj(hn, w, n, mm) for n in "qkv")
            q = be.rope(be.reshape(q, (s, h, hd)), pos, self.freqs, cfg.rope_interleaved, base=self.rope_base)
            k = be.rope(be.reshape(k, (s, kvh, hd)), pos, self.freqs, cfg.rope_interleaved, base=self.rope_base)
            v = be.reshape(v, (s, kvh, hd))
            cache.k[i] = be.write(cache.k[i], k, rows)
            cache.v[i] = be.write(cache.v[i], v, rows)
            x = be.add(x, mm(attend(q, cache.k[i], cache.v[i]), w["o"]))
            hn = be.rms_norm(x, w["mlp_norm"], cfg.norm_eps)
            if "w13" in w:
                gu = mm(hn, w["w13"])
                f = cfg.intermediate_dim
                gate, up = be.slice(gu, -1, 0, f), be.slice(gu, -1, f, 2 * f)
            else:
                gate, up = mm(hn, w["w1"]), mm(hn, w["w3"])
            if cfg.activation == "silu":
                ff = be.swiglu(gate, up)
            else:
                ff = be.mul(be.gelu(gate, approximate=True), up)
            x = be.add(x, mm(ff, w["w2"]))
            if trace is not None:
                trace(f"layer{i}_out", x)
        return be.rms_norm(x, self.norm, cfg.norm_eps)

    def _proj(
        self, x: Tensor, w: dict[str, Tensor], name: str, mm: Callable[[Tensor, Tensor], Tensor] | None = None
    ) -> Tensor:
        y = (mm or self.be.matmul)(x, w[name])
        bias = w.get("b" + name)
        return y if bias is None else self.be.add(y, bias)
