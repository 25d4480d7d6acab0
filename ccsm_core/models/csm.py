"""Sesame's CSM on the backend contract, as the original ``models.py`` computes it.

A frame is 33 columns: 32 audio codebooks (column k looks up ``audio_embeddings[code + 2051*k]``)
and one text column; the backbone input is the masked sum of the 33 embeddings. Per frame the
backbone yields codebook 0 through ``codebook0_head``; a small decoder, restarted every frame,
yields codebooks 1..31 through ``audio_head[i-1]`` from projected embeddings.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping

import numpy as np

from ..backends.base import Backend, Tensor
from .config import DECODER_CACHE, CsmConfig
from .llama import KVCache, Llama, check_shapes

# (codebook index, logits [vocab]) -> sampled id
SampleFn = Callable[[int, np.ndarray], int]


def top_level_shapes(cfg: CsmConfig) -> dict[str, tuple[int, ...]]:
    d, dd, v, n = cfg.backbone.embed_dim, cfg.decoder.embed_dim, cfg.audio_vocab_size, cfg.audio_num_codebooks
    return {"text_embeddings.weight": (cfg.text_vocab_size, d), "audio_embeddings.weight": (v * n, d),
            "projection.weight": (dd, d), "codebook0_head.weight": (v, d)}


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
            raw = tensors["audio_head"]
            arr = raw.numpy() if hasattr(raw, "numpy") else np.asarray(raw)
            return [self.be.weight(np.ascontiguousarray(arr[i].T)) for i in range(n)]
        names = {f"audio_head.{i}.weight": (v, dd) for i in range(n)}
        check_shapes(tensors, names, "csm")
        return [self.be.weight(tensors[name]) for name in names]

    # -- pieces ----------------------------------------------------------------------------
    def embed(self, tokens: np.ndarray, mask: np.ndarray) -> Tensor:
        """``tokens, mask [S, 33]`` -> backbone input ``[S, d]``: the masked sum over columns."""
        be, n = self.be, self.cfg.audio_num_codebooks
        s = tokens.shape[0]
        ids = (tokens[:, :n].astype(np.int64) + self._offsets).reshape(-1).astype(np.int32)
        audio = be.reshape(be.embedding(self.audio_embeddings, be.asarray(ids)), (s, n, -1))
        audio = be.sum(be.mul(audio, be.asarray(mask[:, :n, None].astype(np.float32))), axis=1)
        text = be.embedding(self.text_embeddings, be.asarray(tokens[:, n].astype(np.int32)))
        text = be.mul(text, be.asarray(mask[:, n:].astype(np.float32)))
        return be.add(audio, text)

    def new_caches(self) -> tuple[KVCache, KVCache]:
        return self.backbone.new_cache(), self.decoder.new_cache(DECODER_CACHE)

    def backbone_step(self, tokens: np.ndarray, mask: np.ndarray, positions: np.ndarray, cache: KVCache,
                      trace: Callable[[str, Tensor], None] | None = None) -> Tensor:
        """Prefill or extend the backbone; returns the hidden state of the last row ``[1, d]``."""
        x = self.embed(tokens, mask)
        if trace is not None:
            trace("backbone_in", x)
        h = self.backbone.forward(x, positions, cache, trace)
        if trace is not None:
            trace("backbone_out", h)
        s = len(positions)
        return self.be.slice(h, 0, s - 1, s)

    def frame(self, last_h: Tensor, sample: SampleFn, cache: KVCache,
              trace: Callable[[str, Tensor], None] | None = None) -> np.ndarray:
        """Sample the 32 codes of one frame from the backbone's last hidden state."""
        be, n, v = self.be, self.cfg.audio_num_codebooks, self.cfg.audio_vocab_size
        codes = np.zeros(n, np.int64)
        codes[0] = sample(0, be.to_numpy(be.matmul(last_h, self.codebook0_head))[0])
        e0 = be.embedding(self.audio_embeddings, be.asarray(np.array([codes[0]], np.int32)))
        x = be.matmul(be.concat([last_h, e0], axis=0), self.projection)
        cache.reset()
        h = self.decoder.forward(x, np.array([0, 1]), cache)
        h = be.slice(h, 0, 1, 2)
        if trace is not None:
            trace("decoder_h", h)
        codes[1] = sample(1, be.to_numpy(be.matmul(h, self.audio_heads[0]))[0])
        # steps 2..n-1 are the same graph every frame: backends that can, build each once
        capture = getattr(be, "capture", None) if trace is None else None
        steps = cache.steps
        for i in range(2, n):
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
        return codes

    def _decoder_step(self, i: int, cache: KVCache, trace: Callable[[str, Tensor], None] | None
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
