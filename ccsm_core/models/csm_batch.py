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
from .config import DECODER_CACHE
from .csm import BACKBONE_WINDOW, CSM, cache_bytes
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
    ``h [B, d]`` and codebook-0 logits: ``[B, 32]``. ``samplers[b](codebook, logits)`` picks."""
    be, cfg = model.be, model.cfg
    n, v, b = cfg.audio_num_codebooks, cfg.audio_vocab_size, len(samplers)
    codes = np.zeros((b, n), np.int64)
    codes[:, 0] = [sample(0, c0_logits[j]) for j, sample in enumerate(samplers)]
    capture = getattr(be, "capture", None)
    starts = [(first + j) * DECODER_CACHE for j in range(b)]
    for i in range(1, n):
        if i == 1:
            ids = codes[:, 0].astype(np.int32)
            positions = np.tile(np.array([0, 1], np.int32), b)
            args: tuple[np.ndarray, ...] = (h.astype(np.float32), ids)
        else:
            ids = (codes[:, i - 1] + v * (i - 1)).astype(np.int32)
            positions = np.full(b, i, np.int32)
            args = (ids,)
        rows = (np.repeat(np.array(starts), len(positions) // b) + positions).astype(np.int32)
        mask = causal_mask(positions[: len(positions) // b], i + 1)
        args = (*args, positions, rows, mask)
        fn = partial(_decoder, model, caches.decoder, starts, i)
        if capture is None:
            logits = be.to_numpy(fn(*(be.asarray(a) for a in args))[0])
        else:
            logits = caches.graphs.replay(("decoder", first, b, i), fn, args)[0]
        codes[:, i] = [sample(i, logits[j]) for j, sample in enumerate(samplers)]
    return codes


def _decoder(model: CSM, cache: KVCache, starts: list[int], i: int, *inputs: Tensor) -> list[Tensor]:
    """Decoder step ``i`` for every stream: step 1 runs positions 0 and 1 (the backbone state and
    codebook 0's embedding), later steps the previous code's embedding."""
    be = model.be
    b, dd = len(starts), model.cfg.decoder.embed_dim
    if i == 1:
        h, ids, pos, rows, mask = inputs
        e0 = be.embedding(model.audio_embeddings, ids)
        d = be.shape(h)[1]
        pairs = be.reshape(be.concat([h, e0], axis=1), (2 * b, d))  # h_0, e0_0, h_1, e0_1, ...
        x = matmul_rows(be, pairs, model.projection, 2)
    else:
        ids, pos, rows, mask = inputs
        x = matmul_rows(be, be.embedding(model.audio_embeddings, ids), model.projection)
    out = model.decoder.batch_step(x, pos, rows, [[mask]] * b, cache, starts)
    if i == 1:  # each stream's second row
        out = be.slice(be.reshape(out, (b, 2 * dd)), 1, dd, 2 * dd)
    return [matmul_rows(be, out, model.audio_heads[i - 1])]
