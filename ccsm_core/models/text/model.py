"""A Llama-family text model on the backend contract: its config from GGUF metadata, and the
model (embeddings, the Llama stack, the output head). What differs per architecture lives in one
file each beside this one (`llama`, `qwen2`, `qwen3`, `phi3`, `gemma`, `gemma3`, `mistral3`,
`smollm3`), found by name; their per-layer differences are `ccsm_core.models.llama.LayerOptions`.

Norm weights are used as stored (GGUF's Gemma norms already include the +1).
"""

from __future__ import annotations

import copy
import math
import weakref
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any

import numpy as np

from ...backends.base import BUFFER_DTYPES, Backend, Tensor
from ...errors import FormatError, UsageError
from ...limits import check_allocation
from ...schema import real
from ...tensors import float32_values
from ...token_ids import token_ids
from ..config import LlamaConfig
from ..llama import KVCache, LayerOptions, Llama, fuse_projections
from ..rope_scaling import RopeScaling
from .arch import TextArch, get_arch, need_tensor
from .metadata import check_tensor_shapes, check_vocab, plain, stack_config

WINDOW = 256  # attention windows grow in steps of this many cache rows (as llama.cpp pads its KV view)


@dataclass(frozen=True)
class TextConfig:
    """A text model's shape, read from GGUF metadata."""

    arch: str
    stack: LlamaConfig
    vocab_size: int
    embed_scale: float | None = None
    options: LayerOptions = LayerOptions()
    rope: RopeScaling = RopeScaling()  # linear, YaRN or LongRoPE scaling, as llama.cpp reads it
    local_rope_base: float | None = None  # RoPE base of sliding-window layers

    @classmethod
    def from_metadata(cls, md: Mapping[str, Any], vocab_size: int, where: str = "model") -> TextConfig:
        arch = get_arch(str(md.get("general.architecture", "")), where)

        stack = stack_config(md, arch, where)
        check_vocab(md, arch.name, vocab_size, where)
        dim = stack.embed_dim
        meta = lambda key, default=None: plain(md.get(f"{arch.name}.{key}", default))  # noqa: E731
        local_base = arch.local_rope_base(meta)
        rope = RopeScaling.from_metadata(md, arch.name, where)
        if local_base is not None:
            local_base = real(local_base, "the RoPE base of the sliding-window layers", where, low=1.0, high=1e30)
        return cls(
            arch.name,
            stack,
            vocab_size,
            float(np.sqrt(dim)) if arch.scaled_embeddings else None,
            _scaled_attention(arch.layer_options(meta, stack), rope, stack, local_base, where),
            rope,
            local_base,
        )


def _scaled_attention(
    options: LayerOptions, rope: RopeScaling, stack: LlamaConfig, local_base: float | None, where: str
) -> LayerOptions:
    """``options`` with the attention scale times ``mscale**2``: llama.cpp multiplies rotated
    queries and keys by RoPE scaling's magnitude ``mscale`` (YaRN, LongRoPE's attention factor)."""
    mscale = rope.magnitude()
    if mscale == 1.0:
        return options
    if options.no_rope or local_base is not None or options.has_sliding:
        raise FormatError(
            f"{where}: RoPE scaling of magnitude {mscale:g} with layers without RoPE or sliding-window layers "
            "is not supported",
            "such a model needs another runtime",
        )
    base = 1.0 / math.sqrt(stack.head_dim) if options.attn_scale is None else options.attn_scale
    return replace(options, attn_scale=base * mscale * mscale)


def _rope_factors(tensors: Mapping[str, Any], name: str, head_dim: int) -> np.ndarray | None:
    """Per-pair divisors of the RoPE frequencies stored as ``name`` (None where absent)."""
    if name not in tensors:
        return None
    factors = float32_values(tensors[name]).reshape(-1)
    if factors.shape != (head_dim // 2,) or not np.all(factors > 0):
        raise FormatError(
            f"{name} holds {factors.size} factors, expected {head_dim // 2} positive ones", "the GGUF file is broken"
        )
    return factors


class TextLM:
    """Embeddings, the Llama stack, the output head: ``forward(ids, positions, cache) -> logits``."""

    def __init__(self, be: Backend, cfg: TextConfig, tensors: Mapping[str, Any], kv_dtype: str = "float16") -> None:
        if kv_dtype not in BUFFER_DTYPES:
            raise UsageError(f"KV cache type {kv_dtype!r} is not supported", f"use one of {', '.join(BUFFER_DTYPES)}")
        self.be, self.cfg, self.kv_dtype = be, cfg, kv_dtype
        st = cfg.stack
        need = lambda name: need_tensor(tensors, name)  # noqa: E731
        arch: TextArch = get_arch(cfg.arch)
        check_tensor_shapes(tensors, arch, st, cfg.vocab_size, "model")
        layers = []
        for i in range(st.num_layers):
            w = arch.layer_weights(tensors, f"blk.{i}.", st)
            layers.append({k: be.weight(v) for k, v in fuse_projections(w, f"blk.{i}.").items()})
        rope = cfg.rope
        # Llama 3.1+: per-pair divisors of the base frequencies; LongRoPE (Phi-3): a short and a
        # long set, the long one for contexts beyond the original (`RopeScaling.use_long`)
        factors = _rope_factors(tensors, "rope_freqs.weight", st.head_dim)
        if factors is None:
            factors = _rope_factors(tensors, "rope_factors_short.weight", st.head_dim)
        long_factors = _rope_factors(tensors, "rope_factors_long.weight", st.head_dim)
        freqs = None
        if factors is not None or rope.changes_frequencies:
            freqs = rope.frequencies(st.rope_freqs(), st.rope_base, st.max_seq_len, factors)
        local_freqs = None
        if cfg.local_rope_base is not None:
            local_freqs = replace(st, rope_base=cfg.local_rope_base).rope_freqs()
        norm = be.weight(need("output_norm.weight"))
        self.stack = Llama(be, st, layers, norm, freqs, cfg.options, local_freqs, cfg.local_rope_base)
        self.embeddings = be.weight(need("token_embd.weight"))
        self.output = be.weight(tensors["output.weight"]) if "output.weight" in tensors else self.embeddings
        self.long_stack: Llama | None = None  # LongRoPE: the stack of long contexts
        if long_factors is not None:
            self.long_stack = copy.copy(self.stack)
            self.long_stack.freqs = rope.frequencies(st.rope_freqs(), st.rope_base, st.max_seq_len, long_factors)
            self.long_stack.rope_base = None

        self._long_caches: weakref.WeakSet[KVCache] = weakref.WeakSet()  # caches the long stack runs on

    def stack_for(self, cache: KVCache) -> Llama:
        """The stack that runs on ``cache``: LongRoPE's long one where the context the cache was
        made for exceeds the original context as llama.cpp decides it, else the one stack."""
        return self.long_stack if self.long_stack is not None and cache in self._long_caches else self.stack

    def new_cache(self, capacity: int | None = None, context: int | None = None) -> KVCache:
        """A KV cache of ``capacity`` positions (default: the model's context), checked against
        the memory budget before it is allocated. ``context``: the context of the run it serves
        (default: the capacity), which picks LongRoPE's factors as llama.cpp's context does."""
        st = self.cfg.stack
        size = capacity or st.max_seq_len
        row = 2 * st.num_layers * st.num_kv_heads * st.head_dim * np.dtype(self.kv_dtype).itemsize
        check_allocation(size * row, f"a KV cache of {size} positions", "shorten the prompt or lower --max-tokens")
        cache = self.stack.new_cache(size, self.kv_dtype, WINDOW)
        cache.full_hint = f"shorten the prompt or lower --max-tokens (the model's context is {st.max_seq_len})"
        if self.long_stack is not None and self.cfg.rope.use_long(context or size, st.max_seq_len):
            self._long_caches.add(cache)
        return cache

    def checked_ids(self, ids: Sequence[int] | np.ndarray) -> np.ndarray:
        """``ids`` as int32 after checking each is in the vocabulary (`UsageError` otherwise)."""
        return token_ids(ids, self.cfg.vocab_size).astype(np.int32)

    def next_logits(self, ids: Sequence[int], cache: KVCache) -> np.ndarray:
        """Append ``ids`` to ``cache``; the logits ``[vocab]`` after the last of them.

        A single token runs as a captured step where the backend can capture (one graph per
        attention window of `WINDOW` rows, replayed with new inputs); longer runs are one batch."""
        be = self.be
        arr = self.checked_ids(ids)
        start = cache.length
        capture = getattr(be, "capture", None)
        if len(arr) != 1 or capture is None:
            return be.to_numpy(self.forward(arr, np.arange(start, start + len(arr)), cache))[0]
        cache.check_room(start + 1)
        window = cache.window(start + 1)
        args = (arr, np.array([start], np.int32), *self.stack_for(cache).inputs(np.array([start]), window))
        key = ("text-step", window)
        step = cache.steps.get(key)
        if step is None:
            step = cache.steps[key] = capture(partial(self._step, cache=cache, window=window), *args)
        out = step(*args)[0][0]
        cache.length = start + 1
        return out

    def _step(self, ids: Tensor, pos: Tensor, *inputs: Tensor, cache: KVCache, window: int) -> Tensor:
        be = self.be
        x = be.embedding(self.embeddings, ids)
        if self.cfg.embed_scale is not None:
            x = be.scale(x, self.cfg.embed_scale)
        return be.matmul(self.stack_for(cache).step(x, pos, *inputs, cache=cache, window=window), self.output)

    def forward(self, ids: np.ndarray, positions: np.ndarray, cache: KVCache, *, all_logits: bool = False) -> Tensor:
        """Logits ``[1, vocab]`` for the last position (``[S, vocab]`` with ``all_logits``)."""
        be = self.be
        x = be.embedding(self.embeddings, be.asarray(self.checked_ids(ids)))
        if self.cfg.embed_scale is not None:
            x = be.scale(x, self.cfg.embed_scale)
        h = self.stack_for(cache).forward(x, np.asarray(positions), cache)
        if not all_logits:
            s = len(ids)
            h = be.slice(h, 0, s - 1, s)
        return be.matmul(h, self.output)
