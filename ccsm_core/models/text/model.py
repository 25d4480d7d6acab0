"""A Llama-family text model on the backend contract: its config from GGUF metadata, and the
model (embeddings, the Llama stack, the output head). What differs per architecture lives in one
file each beside this one (`llama`, `mistral`, `qwen2`, `phi3`, `gemma`), found by name.

Norm weights are used as stored (GGUF's Gemma norms already include the +1).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ...backends.base import BUFFER_DTYPES, Backend, Tensor
from ...errors import FormatError, UsageError
from ...tensors import float32_values
from ..config import LlamaConfig
from ..llama import KVCache, Llama, causal_mask, fuse_projections
from .arch import TextArch, get_arch, need_tensor

WINDOW = 256  # attention windows grow in steps of this many cache rows (as llama.cpp pads its KV view)


@dataclass(frozen=True)
class TextConfig:
    """A text model's shape, read from GGUF metadata."""

    arch: str
    stack: LlamaConfig
    vocab_size: int
    embed_scale: float | None = None

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], vocab_size: int, where: str = "model") -> TextConfig:
        arch = get_arch(str(md.get("general.architecture", "")), where)

        def get(key: str, default: Any = None) -> Any:
            value = md.get(f"{arch.name}.{key}", default)
            if value is None:
                raise FormatError(f"{where}: metadata {arch.name}.{key} is missing", "the GGUF file is incomplete")
            return value

        heads = int(get("attention.head_count"))
        dim = int(get("embedding_length"))
        head_size = md.get(f"{arch.name}.attention.key_length")
        stack = LlamaConfig(
            num_layers=int(get("block_count")),
            num_heads=heads,
            num_kv_heads=int(get("attention.head_count_kv", heads)),
            embed_dim=dim,
            intermediate_dim=int(get("feed_forward_length")),
            max_seq_len=int(get("context_length", 4096)),
            norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-5)),
            rope_base=float(get("rope.freq_base", 10000.0)),
            scale_factor=None,
            rope_interleaved=not arch.neox_rope,
            head_size=int(head_size) if head_size is not None and int(head_size) != dim // heads else None,
            activation=arch.activation,
        )
        return cls(arch.name, stack, vocab_size, float(np.sqrt(dim)) if arch.scaled_embeddings else None)


class TextLM:
    """Embeddings, the Llama stack, the output head: ``forward(ids, positions, cache) -> logits``."""

    def __init__(self, be: Backend, cfg: TextConfig, tensors: Mapping[str, Any], kv_dtype: str = "float16") -> None:
        if kv_dtype not in BUFFER_DTYPES:
            raise UsageError(f"KV cache type {kv_dtype!r} is not supported", f"use one of {', '.join(BUFFER_DTYPES)}")
        self.be, self.cfg, self.kv_dtype = be, cfg, kv_dtype
        st = cfg.stack
        need = lambda name: need_tensor(tensors, name)  # noqa: E731
        arch: TextArch = get_arch(cfg.arch)
        layers = []
        for i in range(st.num_layers):
            w = arch.layer_weights(tensors, f"blk.{i}.", st)
            layers.append({k: be.weight(v) for k, v in fuse_projections(w, f"blk.{i}.").items()})
        freqs = None
        if "rope_freqs.weight" in tensors:  # Llama 3.1+: per-pair divisors of the base frequencies
            freqs = st.rope_freqs() / float32_values(tensors["rope_freqs.weight"])
        self.stack = Llama(be, st, layers, be.weight(need("output_norm.weight")), freqs)
        self.embeddings = be.weight(need("token_embd.weight"))
        self.output = be.weight(tensors["output.weight"]) if "output.weight" in tensors else self.embeddings
        self._check(tensors)

    def _check(self, tensors: Mapping[str, Any]) -> None:
        st, v = self.cfg.stack, self.cfg.vocab_size
        want = {
            "token_embd.weight": (v, st.embed_dim),
            "blk.0.attn_output.weight": (st.embed_dim, st.num_heads * st.head_dim),
            "blk.0.ffn_down.weight": (st.embed_dim, st.intermediate_dim),
        }
        for name, shape in want.items():
            got = tuple(tensors[name].shape)
            if got != shape:
                raise FormatError(
                    f"tensor {name!r} has shape {list(got)}, expected {list(shape)}",
                    "the metadata does not match the weights",
                )

    def new_cache(self, capacity: int | None = None) -> KVCache:
        cache = self.stack.new_cache(capacity, self.kv_dtype, WINDOW)
        cache.full_hint = "shorten the prompt or raise --context"
        return cache

    def next_logits(self, ids: Sequence[int], cache: KVCache) -> np.ndarray:
        """Append ``ids`` to ``cache``; the logits ``[vocab]`` after the last of them.

        A single token runs as a captured step where the backend can capture (one graph per
        attention window of `WINDOW` rows, replayed with new inputs); longer runs are one batch."""
        be = self.be
        arr = np.asarray(ids, np.int32).reshape(-1)
        start = cache.length
        capture = getattr(be, "capture", None)
        if len(arr) != 1 or capture is None:
            return be.to_numpy(self.forward(arr, np.arange(start, start + len(arr)), cache))[0]
        if not 0 <= int(arr[0]) < self.cfg.vocab_size:
            raise UsageError(f"token id {int(arr[0])} is outside the vocabulary of {self.cfg.vocab_size}")
        cache.check_room(start + 1)
        window = cache.window(start + 1)
        args = (arr, np.array([start], np.int32), causal_mask(np.array([start]), window))
        key = ("text-step", window)
        step = cache.steps.get(key)
        if step is None:
            step = cache.steps[key] = capture(partial(self._step, cache=cache, window=window), *args)
        out = step(*args)[0][0]
        cache.length = start + 1
        return out

    def _step(self, ids: Tensor, pos: Tensor, mask: Tensor, *, cache: KVCache, window: int) -> Tensor:
        be = self.be
        x = be.embedding(self.embeddings, ids)
        if self.cfg.embed_scale is not None:
            x = be.scale(x, self.cfg.embed_scale)
        return be.matmul(self.stack.step(x, pos, mask, cache, window), self.output)

    def forward(self, ids: np.ndarray, positions: np.ndarray, cache: KVCache, *, all_logits: bool = False) -> Tensor:
        """Logits ``[1, vocab]`` for the last position (``[S, vocab]`` with ``all_logits``)."""
        be = self.be
        x = be.embedding(self.embeddings, be.asarray(np.asarray(ids, np.int32)))
        if self.cfg.embed_scale is not None:
            x = be.scale(x, self.cfg.embed_scale)
        h = self.stack.forward(x, np.asarray(positions), cache)
        if not all_logits:
            s = len(ids)
            h = be.slice(h, 0, s - 1, s)
        return be.matmul(h, self.output)
