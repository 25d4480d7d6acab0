"""A Llama-3-style transformer on the backend contract (torchtune's layer, exactly).

Pre-norm layers ``h = x + attn(rms(x)); out = h + mlp(rms(h))`` with grouped-query attention,
RoPE (Llama-3 scaled) applied before the KV cache, SwiGLU ``w2(silu(w1 x) * w3 x)``, no biases,
and a final RMSNorm. The KV cache is written sequentially from slot 0, as torchtune's is.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..backends.base import Backend, Tensor
from ..errors import FormatError, GenerationError
from .config import LlamaConfig

LAYER_TENSORS = {
    "q": "attn.q_proj.weight", "k": "attn.k_proj.weight", "v": "attn.v_proj.weight",
    "o": "attn.output_proj.weight", "w1": "mlp.w1.weight", "w2": "mlp.w2.weight",
    "w3": "mlp.w3.weight", "sa_norm": "sa_norm.scale", "mlp_norm": "mlp_norm.scale",
}


def expected_shapes(cfg: LlamaConfig, prefix: str) -> dict[str, tuple[int, ...]]:
    """Name -> shape of every tensor of a stack saved under ``prefix`` (``backbone``...)."""
    d, hd = cfg.embed_dim, cfg.head_dim
    per = {"q": (cfg.num_heads * hd, d), "k": (cfg.num_kv_heads * hd, d), "v": (cfg.num_kv_heads * hd, d),
           "o": (d, cfg.num_heads * hd), "w1": (cfg.intermediate_dim, d), "w2": (d, cfg.intermediate_dim),
           "w3": (cfg.intermediate_dim, d), "sa_norm": (d,), "mlp_norm": (d,)}
    out = {f"{prefix}.layers.{i}.{LAYER_TENSORS[k]}": s for i in range(cfg.num_layers) for k, s in per.items()}
    out[f"{prefix}.norm.scale"] = (d,)
    return out


def check_shapes(tensors: Mapping[str, Any], shapes: Mapping[str, tuple[int, ...]], where: str) -> None:
    """Every expected tensor exists with the expected shape (before anything is computed)."""
    for name, shape in shapes.items():
        if name not in tensors:
            raise FormatError(f"{where}: tensor {name!r} is missing",
                              "the checkpoint is incomplete or for a different model flavour")
        got = tuple(tensors[name].shape)
        if got != tuple(shape):
            raise FormatError(f"{where}: tensor {name!r} has shape {list(got)}, expected {list(shape)}",
                              "the config.json flavour does not match the weights")


class KVCache:
    """Preallocated per-layer K/V buffers ``[capacity, kv_heads, head_dim]`` in the backend,
    stored as ``dtype`` (``float32``, or ``float16`` as llama.cpp keeps text-model caches)."""

    def __init__(self, be: Backend, cfg: LlamaConfig, capacity: int, dtype: str = "float32") -> None:
        shape = (capacity, cfg.num_kv_heads, cfg.head_dim)
        self.k = [be.zeros(shape, dtype) for _ in range(cfg.num_layers)]
        self.v = [be.zeros(shape, dtype) for _ in range(cfg.num_layers)]
        self.dtype = dtype
        self.capacity = capacity
        self.length = 0
        self.steps: dict[Any, Any] = {}  # step graphs a backend captured on these buffers

    def reset(self) -> None:
        """Rewind; stale rows are never read because reads stop at ``length``."""
        self.length = 0


class Llama:
    """The transformer stack: ``forward(x [S, d], positions) -> hidden [S, d]`` (post-norm).

    ``layers`` hold backend weights under the keys of `LAYER_TENSORS` plus optional q/k/v biases
    ``bq``, ``bk``, ``bv``; ``freqs`` overrides the RoPE frequencies (e.g. from a GGUF's
    ``rope_freqs`` factors)."""

    def __init__(self, be: Backend, cfg: LlamaConfig, layers: list[dict[str, Tensor]], norm: Tensor,
                 freqs: np.ndarray | None = None) -> None:
        self.be, self.cfg, self.layers, self.norm = be, cfg, layers, norm
        self.freqs = cfg.rope_freqs() if freqs is None else np.asarray(freqs, np.float32)
        # plain RoPE (no scaling, no per-pair factors): backends with a fused kernel derive the
        # frequencies from the base themselves, bit for bit as llama.cpp does
        self.rope_base = cfg.rope_base if freqs is None and cfg.scale_factor is None else None
        self.scale = 1.0 / float(np.sqrt(cfg.head_dim))

    @classmethod
    def from_torchtune(cls, be: Backend, cfg: LlamaConfig, tensors: Mapping[str, Any], prefix: str) -> "Llama":
        """The stack saved under ``prefix`` with torchtune's names (CSM's checkpoint)."""
        check_shapes(tensors, expected_shapes(cfg, prefix), prefix)
        layers = [{k: be.weight(tensors[f"{prefix}.layers.{i}.{n}"]) for k, n in LAYER_TENSORS.items()}
                  for i in range(cfg.num_layers)]
        return cls(be, cfg, layers, be.weight(tensors[f"{prefix}.norm.scale"]))

    def new_cache(self, capacity: int | None = None, dtype: str = "float32") -> KVCache:
        return KVCache(self.be, self.cfg, capacity or self.cfg.max_seq_len, dtype)

    def forward(self, x: Tensor, positions: np.ndarray, cache: KVCache,
                trace: Callable[[str, Tensor], None] | None = None) -> Tensor:
        """Run ``x [S, d]`` at ``positions [S]``, appending to ``cache``; returns the final-norm output."""
        be, cfg = self.be, self.cfg
        s = len(positions)
        start, end = cache.length, cache.length + s
        if end > cache.capacity:
            raise GenerationError(f"sequence of {end} positions exceeds the context of {cache.capacity}",
                                  "shorten the text or context, or lower --max-audio-ms")
        pos = be.asarray(np.asarray(positions, np.int32))
        # torchtune masks cache slot j for query i with tril(max_seq_len)[pos_i]: j <= pos_i
        mask_np = np.where(np.arange(end)[None, :] <= np.asarray(positions)[:, None], 0.0, -np.inf)
        mask = be.asarray(mask_np.astype(np.float32))
        hd, h, kvh = cfg.head_dim, cfg.num_heads, cfg.num_kv_heads
        for i, w in enumerate(self.layers):
            hn = be.rms_norm(x, w["sa_norm"], cfg.norm_eps)
            q, k, v = (self._proj(hn, w, n) for n in "qkv")
            q = be.rope(be.reshape(q, (s, h, hd)), pos, self.freqs, cfg.rope_interleaved, base=self.rope_base)
            k = be.rope(be.reshape(k, (s, kvh, hd)), pos, self.freqs, cfg.rope_interleaved, base=self.rope_base)
            v = be.reshape(v, (s, kvh, hd))
            cache.k[i] = be.write(cache.k[i], k, start)
            cache.v[i] = be.write(cache.v[i], v, start)
            kk = be.slice(cache.k[i], 0, 0, end)
            vv = be.slice(cache.v[i], 0, 0, end)
            att = be.reshape(be.attention(q, kk, vv, mask, self.scale), (s, h * hd))
            x = be.add(x, be.matmul(att, w["o"]))
            hn = be.rms_norm(x, w["mlp_norm"], cfg.norm_eps)
            gate = be.matmul(hn, w["w1"])
            gate = be.silu(gate) if cfg.activation == "silu" else be.gelu(gate, approximate=True)
            ff = be.mul(gate, be.matmul(hn, w["w3"]))
            x = be.add(x, be.matmul(ff, w["w2"]))
            if trace is not None:
                trace(f"layer{i}_out", x)
        cache.length = end
        return be.rms_norm(x, self.norm, cfg.norm_eps)

    def _proj(self, x: Tensor, w: dict[str, Tensor], name: str) -> Tensor:
        y = self.be.matmul(x, w[name])
        bias = w.get("b" + name)
        return y if bias is None else self.be.add(y, bias)
