"""Sesame's CSM on the backend contract, as the original ``models.py`` computes it.

A frame is 33 columns: 32 audio codebooks (column k looks up ``audio_embeddings[code + 2051*k]``)
and one text column; the backbone input is the masked sum of the 33 embeddings. Per frame the
backbone yields codebook 0 through ``codebook0_head``; a small decoder, restarted every frame,
yields codebooks 1..31 through ``audio_head[i-1]`` from projected embeddings.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np

from ..backends.base import Backend, Tensor
from ..limits import check_allocation
from ..tensors import float32_values
from . import csm_fused
from .config import DECODER_CACHE, CsmConfig, LlamaConfig
from .llama import KVCache, Llama, causal_mask, check_shapes, expected_shapes


def cache_bytes(cfg: LlamaConfig, rows: int) -> int:
    """Bytes of a float32 K and V cache of ``rows`` positions for every layer of ``cfg``."""
    return 2 * 4 * cfg.num_layers * rows * cfg.num_kv_heads * cfg.head_dim


BACKBONE_WINDOW = 64  # backbone attention reads whole multiples of this many cache rows

# (codebook index, logits [vocab]) -> sampled id
SampleFn = Callable[[int, np.ndarray], int]


def top_level_shapes(cfg: CsmConfig) -> dict[str, tuple[int, ...]]:
    d, dd, v, n = cfg.backbone.embed_dim, cfg.decoder.embed_dim, cfg.audio_vocab_size, cfg.audio_num_codebooks
    return {
        "text_embeddings.weight": (cfg.text_vocab_size, d),
        "audio_embeddings.weight": (v * n, d),
        "projection.weight": (dd, d),
        "codebook0_head.weight": (v, d),
    }


def csm_shapes(cfg: CsmConfig, *, split_heads: bool = False) -> dict[str, tuple[int, ...]]:
    """Every CSM tensor's name and shape: the original ``audio_head [n-1, decoder_dim, vocab]``, or
    with ``split_heads`` one ``audio_head.{i}.weight [vocab, decoder_dim]`` per codebook (our GGUF)."""
    dd, v, n = cfg.decoder.embed_dim, cfg.audio_vocab_size, cfg.audio_num_codebooks
    shapes = {**expected_shapes(cfg.backbone, "backbone"), **expected_shapes(cfg.decoder, "decoder")}
    shapes.update(top_level_shapes(cfg))
    if split_heads:
        shapes.update({f"audio_head.{i}.weight": (v, dd) for i in range(n - 1)})
    else:
        shapes["audio_head"] = (n - 1, dd, v)
    return shapes


class CSM:
    """The model: embeddings, backbone, codebook-0 head, projection, decoder, audio heads.

    ``tensors`` maps the original parameter names to arrays or `TensorData`. The audio heads come
    either as the original ``audio_head`` ``[n-1, decoder_dim, vocab]`` (used as ``h @ W``) or as
    ``audio_head.{i}.weight`` ``[vocab, decoder_dim]`` (already transposed, as in our GGUF).
    """

    def __init__(self, be: Backend, cfg: CsmConfig, tensors: Mapping[str, Any]) -> None:
        check_shapes(tensors, top_level_shapes(cfg), "csm")
        self.be, self.cfg = be, cfg
        self.backbone = Llama.from_torchtune(be, cfg.backbone, tensors, "backbone")
        self.decoder = Llama.from_torchtune(be, cfg.decoder, tensors, "decoder")
        self.text_embeddings = be.weight(tensors["text_embeddings.weight"])
        self.audio_embeddings = be.weight(tensors["audio_embeddings.weight"])
        self.projection = be.weight(tensors["projection.weight"])
        self.codebook0_head = be.weight(tensors["codebook0_head.weight"])
        self.audio_heads = self._heads(tensors)
        n = cfg.audio_num_codebooks
        self._offsets = (np.arange(n) * cfg.audio_vocab_size).astype(np.int32)

    def _heads(self, tensors: Mapping[str, Any]) -> list[Tensor]:
        cfg = self.cfg
        n, dd, v = cfg.audio_num_codebooks - 1, cfg.decoder.embed_dim, cfg.audio_vocab_size
        if "audio_head" in tensors:
            check_shapes(tensors, {"audio_head": (n, dd, v)}, "csm")
            arr = float32_values(tensors["audio_head"])
            return [self.be.weight(np.ascontiguousarray(arr[i].T)) for i in range(n)]
        names = {f"audio_head.{i}.weight": (v, dd) for i in range(n)}
        check_shapes(tensors, names, "csm")
        return [self.be.weight(tensors[name]) for name in names]

    # -- pieces ----------------------------------------------------------------------------
    def embed(self, tokens: np.ndarray, mask: np.ndarray) -> Tensor:
        """``tokens, mask [S, 33]`` -> backbone input ``[S, d]``: the masked sum over columns."""
        be = self.be
        return self._embed(*(be.asarray(a) for a in self._embed_inputs(tokens, mask)))

    def _embed_inputs(self, tokens: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, ...]:
        """Host arrays `_embed` takes: audio ids with codebook offsets, their mask, text ids, theirs."""
        n = self.cfg.audio_num_codebooks
        ids = (tokens[:, :n].astype(np.int64) + self._offsets).reshape(-1).astype(np.int32)
        return (
            ids,
            mask[:, :n, None].astype(np.float32),
            tokens[:, n].astype(np.int32),
            mask[:, n:].astype(np.float32),
        )

    def _embed(self, audio_ids: Tensor, audio_mask: Tensor, text_ids: Tensor, text_mask: Tensor) -> Tensor:
        be, n = self.be, self.cfg.audio_num_codebooks
        s = be.shape(text_ids)[0]
        audio = be.reshape(be.embedding(self.audio_embeddings, audio_ids), (s, n, -1))
        audio = be.sum(be.mul(audio, audio_mask), axis=1)
        text = be.mul(be.embedding(self.text_embeddings, text_ids), text_mask)
        return be.add(audio, text)

    def new_caches(self) -> tuple[KVCache, KVCache]:
        """The backbone's cache (``max_seq_len`` rows) and the decoder's (one frame), their size
        checked against the memory budget first (`limits.check_allocation`)."""
        need = cache_bytes(self.cfg.backbone, self.cfg.backbone.max_seq_len) + cache_bytes(
            self.cfg.decoder, DECODER_CACHE
        )
        check_allocation(
            need, "the KV caches", f"the model's max_seq_len {self.cfg.backbone.max_seq_len} is too large or broken"
        )
        return (self.backbone.new_cache(window_multiple=BACKBONE_WINDOW), self.decoder.new_cache(DECODER_CACHE))

    def backbone_step(
        self,
        tokens: np.ndarray,
        mask: np.ndarray,
        positions: np.ndarray,
        cache: KVCache,
        trace: Callable[[str, Tensor], None] | None = None,
    ) -> Tensor:
        """Prefill or extend the backbone; returns the hidden state of the last row ``[1, d]``."""
        x = self.embed(tokens, mask)
        if trace is not None:
            trace("backbone_in", x)
        h = self.backbone.forward(x, positions, cache, trace)
        if trace is not None:
            trace("backbone_out", h)
        s = len(positions)
        return self.be.slice(h, 0, s - 1, s)

    def backbone_row(self, tokens: np.ndarray, mask: np.ndarray, cache: KVCache) -> tuple[np.ndarray, np.ndarray]:
        """Append one row ``tokens, mask [1, 33]`` at the next position: ``(h [1, d], codebook-0
        logits [vocab])`` as host arrays. Backends that can capture run one graph per attention
        window (`BACKBONE_WINDOW` rows), replayed frame after frame."""
        be, pos = self.be, cache.length
        capture = getattr(be, "capture", None)
        if capture is None:
            h = self.backbone_step(tokens, mask, np.array([pos]), cache)
            return be.to_numpy(h), be.to_numpy(be.matmul(h, self.codebook0_head))[0]
        cache.check_room(pos + 1)
        window = cache.window(pos + 1)
        args = (*self._embed_inputs(tokens, mask), np.array([pos], np.int32), causal_mask(np.array([pos]), window))
        step = cache.steps.get(("row", window))
        if step is None:
            step = cache.steps[("row", window)] = capture(partial(self._row, cache=cache, window=window), *args)
        h, c0 = step(*args)
        cache.length = pos + 1
        return h, c0[0]

    def _row(
        self,
        audio_ids: Tensor,
        audio_mask: Tensor,
        text_ids: Tensor,
        text_mask: Tensor,
        pos: Tensor,
        attn_mask: Tensor,
        *,
        cache: KVCache,
        window: int,
    ) -> list[Tensor]:
        x = self._embed(audio_ids, audio_mask, text_ids, text_mask)
        h = self.backbone.step(x, pos, attn_mask, cache=cache, window=window)
        return [h, self.be.matmul(h, self.codebook0_head)]

    def codebook0_logits(self, h: Tensor | np.ndarray) -> np.ndarray:
        """Codebook 0's logits ``[vocab]`` from one backbone state ``h [1, d]``."""
        be = self.be
        h_t = be.asarray(h) if isinstance(h, np.ndarray) else h
        return be.to_numpy(be.matmul(h_t, self.codebook0_head))[0]

    def frame(
        self,
        last_h: Tensor | np.ndarray,
        sample: SampleFn,
        cache: KVCache,
        trace: Callable[[str, Tensor], None] | None = None,
        c0_logits: np.ndarray | None = None,
    ) -> np.ndarray:
        """Sample the 32 codes of one frame from the backbone's last hidden state (a tensor, or
        a host array with its codebook-0 logits from `backbone_row`). A sampler with a fused plan
        (`csm_fused`) has codebooks 1..31 picked inside one graph, exactly as here on the host."""
        be, n = self.be, self.cfg.audio_num_codebooks
        codes = np.zeros(n, np.int64)
        h_t = be.asarray(last_h) if isinstance(last_h, np.ndarray) else last_h
        if c0_logits is None:
            c0_logits = self.codebook0_logits(h_t)
        codes[0] = sample(0, c0_logits)
        plan = csm_fused.plan_for(be, sample, self.cfg.audio_vocab_size) if trace is None else None
        start = 1 if plan is None else csm_fused.run(self, plan, sample, last_h, codes, cache)  # type: ignore[arg-type]
        if start < n:
            self._host_steps(last_h, h_t, codes, start, sample, cache, trace)
        return codes

    def _host_steps(
        self,
        last_h: Tensor | np.ndarray,
        h_t: Tensor,
        codes: np.ndarray,
        start: int,
        sample: SampleFn,
        cache: KVCache,
        trace: Callable[[str, Tensor], None] | None,
    ) -> None:
        """Codebooks ``start..n-1``, each step's logits sampled on the host (from ``start`` >= 2
        the cache holds the rows of the steps before)."""
        be = self.be
        capture = getattr(be, "capture", None) if trace is None else None
        if start > 1:
            cache.length = start
            self._later_steps(codes, start, sample, cache, capture, trace)
            return
        e0 = np.array([codes[0]], np.int32)
        cache.reset()
        if capture is not None:  # the decoder's first step (two positions) is the same graph every frame
            h_host = last_h if isinstance(last_h, np.ndarray) else be.to_numpy(last_h)
            step = cache.steps.get(1)
            if step is None:
                step = cache.steps[1] = capture(partial(self._decoder_first, cache=cache, trace=None), h_host, e0)
            logits = step(h_host, e0)[0][0]
            cache.length = 2
        else:
            logits = be.to_numpy(self._decoder_first(h_t, be.asarray(e0), cache=cache, trace=trace))[0]
        codes[1] = sample(1, logits)
        self._later_steps(codes, 2, sample, cache, capture, trace)

    def _later_steps(
        self,
        codes: np.ndarray,
        start: int,
        sample: SampleFn,
        cache: KVCache,
        capture: Any,
        trace: Callable[[str, Tensor], None] | None,
    ) -> None:
        be, n, v = self.be, self.cfg.audio_num_codebooks, self.cfg.audio_vocab_size
        # steps 2..n-1 are the same graph every frame: backends that can, build each once
        steps = cache.steps
        for i in range(start, n):
            ids = np.array([codes[i - 1] + v * (i - 1)], np.int32)
            if capture is not None:
                step = steps.get(i)
                if step is None:
                    step = steps[i] = capture(self._decoder_step(i, cache, None), ids)
                logits = step(ids)[0][0]
                cache.length = i + 1
            else:
                logits = be.to_numpy(self._decoder_step(i, cache, trace)(be.asarray(ids)))[0]
            codes[i] = sample(i, logits)

    def _decoder_first(
        self, h: Tensor, e0_id: Tensor, *, cache: KVCache, trace: Callable[[str, Tensor], None] | None
    ) -> Tensor:
        """Decoder positions 0 and 1 (the backbone state, codebook 0's embedding) -> codebook-1 logits."""
        be = self.be
        e0 = be.embedding(self.audio_embeddings, e0_id)
        x = be.matmul(be.concat([h, e0], axis=0), self.projection)
        hd = be.slice(self.decoder.forward(x, np.array([0, 1]), cache), 0, 1, 2)
        if trace is not None:
            trace("decoder_h", hd)
        return be.matmul(hd, self.audio_heads[0])

    def _decoder_step(
        self, i: int, cache: KVCache, trace: Callable[[str, Tensor], None] | None
    ) -> Callable[[Tensor], Tensor]:
        """Decoder step ``i`` (>= 2): the previous code's embedding -> codebook ``i`` logits."""
        be = self.be

        def step(ids: Tensor) -> Tensor:
            x = be.matmul(be.embedding(self.audio_embeddings, ids), self.projection)
            h = self.decoder.forward(x, np.array([i]), cache)
            if trace is not None:
                trace("decoder_h", h)
            return be.matmul(h, self.audio_heads[i - 1])

        return step
