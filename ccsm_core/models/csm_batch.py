"""CSM's per-frame work for several streams at once: one backbone row and one decoder pass each.

Every stream owns a *slot*: ``span`` backbone cache rows and ``DECODER_CACHE`` decoder rows in
shared buffers. Active streams occupy slots ``0..B-1`` (the scheduler keeps them packed), so a
batch's computation depends only on ``B`` and the attention window, and backends that capture
graphs replay one per shape. The weights are read once per step for all ``B`` streams, which is
what makes a batch cheaper than ``B`` single steps on a memory-bound CPU.

Each stream gets exactly the numbers it gets alone: products go through the backend's
``matmul_rows`` (each group of rows computed as by itself), attention runs per stream over its
own rows (a longer window only adds rows the mask hides), and everything else works row by row.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from ..backends.base import Replays, Tensor, matmul_rows
from ..errors import GenerationError
from ..limits import check_allocation
from . import csm_fused, decoder_rows
from .config import DECODER_CACHE
from .csm import BACKBONE_WINDOW, CSM, cache_bytes
from .decoder_rows import first_rows, step_inputs, step_logits
from .llama import KVCache, causal_mask

MAX_CAPTURED = 48  # captured batch graphs kept (least recently used dropped first)


class BatchCaches:
    """The backbone and decoder KV rows of ``slots`` streams, and the graphs captured on them."""

    def __init__(self, model: CSM, slots: int) -> None:
        self.model, self.slots = model, slots
        self.span = model.cfg.backbone.max_seq_len
        cfg = model.cfg
        need = cache_bytes(cfg.backbone, slots * self.span) + cache_bytes(cfg.decoder, slots * DECODER_CACHE)
        check_allocation(need, f"the KV caches of {slots} streams", "batch fewer streams at once")
        self.backbone = model.backbone.new_cache(slots * self.span, window_multiple=BACKBONE_WINDOW)
        self.decoder = model.decoder.new_cache(slots * DECODER_CACHE)
        self.graphs = Replays(model.be, MAX_CAPTURED)

    def load(self, slot: int, cache: KVCache, rows: int) -> None:
        """Copy the first ``rows`` backbone rows of a stream's own ``cache`` into ``slot``."""
        self.backbone.write_rows(*cache.read_rows(rows), at=slot * self.span)

    def move(self, src: int, dst: int, rows: int) -> None:
        """Move a stream's first ``rows`` backbone rows from slot ``src`` to slot ``dst``."""
        self.backbone.write_rows(*self.backbone.read_rows(rows, src * self.span), at=dst * self.span)


def backbone_rows(
    model: CSM, caches: BatchCaches, tokens: np.ndarray, mask: np.ndarray, positions: np.ndarray, first: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """One backbone row for each of the ``B`` streams in slots ``first..first+B-1``: ``tokens,
    mask [B, 33]`` at ``positions [B]`` -> ``(h [B, d], codebook-0 logits [B, vocab])`` on the host."""
    be, span = model.be, caches.span
    b = len(positions)
    if int(np.max(positions)) >= span:
        raise GenerationError(
            f"sequence of {int(np.max(positions)) + 1} positions exceeds the context of {span}",
            caches.backbone.full_hint,
        )
    windows = [min(span, caches.backbone.window(int(p) + 1)) for p in positions]
    capture = getattr(be, "capture", None)
    if capture is not None:  # one window for all: a graph per (B, window), masks hide the rest
        windows = [max(windows)] * b
    rows = ((first + np.arange(b)) * span + positions).astype(np.int32)
    masks = [causal_mask(np.array([p]), w) for p, w in zip(positions, windows)]
    args = (*model._embed_inputs(tokens, mask), positions.astype(np.int32), rows, *masks)
    fn = partial(_backbone, model, caches.backbone, [(first + j) * span for j in range(b)])
    if capture is None:
        h, c0 = fn(*(be.asarray(a) for a in args))
        return be.to_numpy(h), be.to_numpy(c0)
    h, c0 = caches.graphs.replay(("row", first, b, windows[0]), fn, args)
    return h, c0


def _backbone(model: CSM, cache: KVCache, starts: list[int], *inputs: Tensor) -> list[Tensor]:
    ids, amask, text, tmask, pos, rows, *masks = inputs
    x = model._embed(ids, amask, text, tmask)
    h = model.backbone.batch_step(x, pos, rows, [[m] for m in masks], cache, starts)
    return [h, matmul_rows(model.be, h, model.codebook0_head)]


def decode_frames(
    model: CSM,
    caches: BatchCaches,
    h: np.ndarray,
    c0_logits: np.ndarray,
    samplers: list[Callable[[int, np.ndarray], int]],
    first: int = 0,
) -> np.ndarray:
    """The 32 codes of one frame for each stream in slots ``first..first+B-1``, from its backbone state
    ``h [B, d]`` and codebook-0 logits: ``[B, 32]``. ``samplers[b](codebook, logits)`` picks.

    Where every sampler has a fused plan with the same top-k (`csm_fused`), one graph runs the
    31 decoder steps of all streams and picks their codes; from the earliest step at which a
    stream's pick does not stand, the steps run here again for all streams, sampling only those
    that did not stand there (the others pass their picks through)."""
    be, cfg = model.be, model.cfg
    n, b = cfg.audio_num_codebooks, len(samplers)
    codes = np.zeros((b, n), np.int64)
    codes[:, 0] = [sample(0, c0_logits[j]) for j, sample in enumerate(samplers)]
    starts = np.ones(b, np.int64)  # per stream, the first codebook sampled here
    plans = [csm_fused.plan_for(be, sample, cfg.audio_vocab_size) for sample in samplers]
    if all(plans) and len({p.k for p in plans if p}) == 1:
        k = plans[0].k if plans[0] else 0
        slots = [(first + j) * DECODER_CACHE for j in range(b)]

        def compute(inv_q: np.ndarray, bias: np.ndarray, inv_t: np.ndarray) -> np.ndarray:
            args = (h.astype(np.float32), codes[:, 0].astype(np.int32), inv_q.reshape(-1, k), bias, inv_t)
            replay = caches.graphs.replay if getattr(be, "capture", None) is not None else None
            key = ("fused", first, b, k)
            return decoder_rows.fused_compute(model, caches.decoder, slots, k, args, replay, key).reshape(n - 1, b, -1)

        fused = [p for p in plans if p]
        starts = csm_fused.run_rows(fused, samplers, codes, compute, cfg.audio_vocab_size)  # type: ignore[arg-type]
    for i in range(int(starts.min()), n):
        logits = _decoder_logits(model, caches, codes, i, h, first)
        for j, sample in enumerate(samplers):
            if i >= starts[j]:
                codes[j, i] = sample(i, logits[j])
    return codes


def _decoder_logits(
    model: CSM, caches: BatchCaches, codes: np.ndarray, i: int, h: np.ndarray, first: int
) -> np.ndarray:
    """Decoder step ``i`` of every stream on the host path: codebook ``i``'s logits ``[B, vocab]``."""
    be, v = model.be, model.cfg.audio_vocab_size
    b = len(codes)
    starts = [(first + j) * DECODER_CACHE for j in range(b)]
    if i == 1:
        args: tuple[np.ndarray, ...] = (h.astype(np.float32), codes[:, 0].astype(np.int32))
    else:
        args = ((codes[:, i - 1] + v * (i - 1)).astype(np.int32),)
    args = (*args, *step_inputs(starts, i))
    fn = partial(_decoder, model, caches.decoder, starts, i)
    if getattr(be, "capture", None) is None:
        return be.to_numpy(fn(*(be.asarray(a) for a in args))[0])
    return caches.graphs.replay(("decoder", first, b, i), fn, args)[0]


def _decoder(model: CSM, cache: KVCache, starts: list[int], i: int, *inputs: Tensor) -> list[Tensor]:
    """Decoder step ``i`` for every stream: step 1 runs positions 0 and 1 (the backbone state and
    codebook 0's embedding), later steps the previous code's embedding."""
    be = model.be
    if i == 1:
        h, ids, *step = inputs
        x = first_rows(model, h, be.embedding(model.audio_embeddings, ids))
    else:
        ids, *step = inputs
        x = matmul_rows(be, be.embedding(model.audio_embeddings, ids), model.projection)
    return [step_logits(model, cache, starts, i, x, *step)]
