"""CSM's decoder steps for ``B`` streams whose cache rows start at ``starts`` in one KV cache:
step inputs, the projected input rows, the logits of a step, and a whole frame whose codes are
picked in the graph (`select`; the plans and the host's check are `csm_fused`'s). Used by the
batched decoder (`csm_batch`, ``B`` >= 1) and by one stream's fused frame (`CSM.frame` through
`csm_fused.run`, ``B`` = 1 on its own decoder cache).

Products go through ``matmul_rows`` and attention through ``batch_step``, so each stream gets
exactly what it gets alone.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import TYPE_CHECKING, Any

import numpy as np

from ..backends.base import Tensor, matmul_rows
from .llama import causal_mask

if TYPE_CHECKING:
    from .llama import KVCache

CSM = Any  # a `ccsm_core.models.csm.CSM` (which imports this module's users)
Replay = Callable[[Any, Callable[..., Any], tuple[np.ndarray, ...]], list[np.ndarray]]


def step_inputs(starts: list[int], i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Decoder step ``i``'s positions and cache rows ``[B*S]`` (S = 2 at step 1, else 1) and causal mask."""
    b = len(starts)
    positions = np.tile(np.array([0, 1], np.int32), b) if i == 1 else np.full(b, i, np.int32)
    s = len(positions) // b
    rows = (np.repeat(np.array(starts), s) + positions).astype(np.int32)
    return positions, rows, causal_mask(positions[:s], i + 1)


def first_rows(model: CSM, h: Tensor, e0: Tensor) -> Tensor:
    """Step 1's input rows ``[2B, d]``: each stream's backbone state, then its codebook-0 embedding."""
    be = model.be
    b, d = be.shape(h)
    pairs = be.reshape(be.concat([h, e0], axis=1), (2 * b, d))  # h_0, e0_0, h_1, e0_1, ...
    return matmul_rows(be, pairs, model.projection, 2)


def step_logits(model: CSM, cache: KVCache, starts: list[int], i: int, x: Tensor, *step: Tensor) -> Tensor:
    """Decoder step ``i`` from its input rows ``x``: codebook ``i``'s logits ``[B, vocab]``."""
    be = model.be
    b, dd = len(starts), model.cfg.decoder.embed_dim
    pos, rows, mask = step
    out = model.decoder.batch_step(x, pos, rows, [[mask]] * b, cache, starts)
    if i == 1:  # each stream's second row
        out = be.slice(be.reshape(out, (b, 2 * dd)), 1, dd, 2 * dd)
    return matmul_rows(be, out, model.audio_heads[i - 1])


def fused_compute(
    model: CSM, cache: KVCache, starts: list[int], k: int, args: tuple[np.ndarray, ...], replay: Replay | None, key: Any
) -> np.ndarray:
    """The fused frame's packed rows ``[(n-1)*B, 2k+4]`` (step-major): through ``replay`` (the
    graph captured once under ``key``) where the backend captures, else op by op."""
    be = model.be
    fn = partial(fused_frame, model, cache, starts, k)
    if replay is None:
        return np.asarray(be.to_numpy(fn(*(be.asarray(a) for a in args))[0]))
    return np.asarray(replay(key, fn, args)[0])


def fused_frame(model: CSM, cache: KVCache, starts: list[int], k: int, *inputs: Tensor) -> list[Tensor]:
    """``(h [B, d], e0 [B] int, 1/q [(n-1)*B, k], bias [B, vocab], 1/T [B, 1]) -> [packed
    [(n-1)*B, 2k+4]]``: decoder steps 1..n-1 of every stream, each picking the codes whose
    embeddings feed the next step (`select`)."""
    be: Any = model.be  # with the selection ops (`csm_fused.plan_for` checked)
    n, v, b = model.cfg.audio_num_codebooks, model.cfg.audio_vocab_size, len(starts)
    h, e0, inv_q, bias, inv_t = inputs

    def step(i: int) -> list[Tensor]:
        return [be.asarray(a) for a in step_inputs(starts, i)]

    x = first_rows(model, h, be.embedding(model.audio_embeddings, e0))
    logits = step_logits(model, cache, starts, 1, x, *step(1))
    packed = []
    for i in range(1, n):
        row, pick = select(be, logits, bias, be.slice(inv_q, 0, (i - 1) * b, i * b), inv_t, k)
        packed.append(row)
        if i + 1 < n:
            ids = be.astype(be.reshape(be.add(pick, be.asarray(np.array([[i * v]], np.float32))), (1, b)), "int32")
            x = matmul_rows(be, be.take(model.audio_embeddings, ids), model.projection)
            logits = step_logits(model, cache, starts, i + 1, x, *step(i + 1))
    return [be.concat(packed, axis=0)]


def select(be: Any, logits: Tensor, bias: Tensor, inv_q: Tensor, inv_t: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """One step's picks in the graph for ``R`` rows (streams): ``logits, bias [R, vocab]``,
    ``inv_q [R, k]``, ``inv_t [R, 1]`` -> ``(packed [R, 2k+4], pick [R, 1] as float)``. A row
    of ``packed`` is the ``k+1`` best biased logits (largest first), their ids, the pick and the
    logits' sum. The pick is a float32 guess of the host's (`exact_rows` checks it)."""
    r, vocab = be.shape(logits)
    x = be.add(logits, bias)
    top = be.top_k(x, k + 1)  # [R, k+1], in no order
    vals = be.take(be.reshape(x, (r * vocab, 1)), _flat(be, top, vocab))  # [R*(k+1), 1]
    order = _flat(be, be.argsort(be.reshape(vals, (r, k + 1)), descending=True), k + 1)
    vals_d = be.take(vals, order)
    ids_d = be.take(be.reshape(be.astype(top, "float32"), (r * (k + 1), 1)), order)
    ids_k = be.slice(be.reshape(ids_d, (r, k + 1)), 1, 0, k)
    by_id = _flat(be, be.argsort(ids_k), k)  # the live ids in ascending order, as the host
    vals_k = be.reshape(be.slice(be.reshape(vals_d, (r, k + 1)), 1, 0, k), (r * k, 1))
    vals_a = be.reshape(be.take(vals_k, by_id), (r, k))
    ids_a = be.take(be.reshape(ids_k, (r * k, 1)), by_id)
    race = be.mul(be.softmax(be.mul(vals_a, inv_t)), inv_q)  # probs / q: the exponential race
    pick = be.take(ids_a, _flat(be, be.top_k(race, 1), k))  # [R, 1]
    total = be.reshape(be.sum(logits, axis=1), (r, 1))
    packed = be.concat(
        [be.reshape(vals_d, (r, k + 1)), be.reshape(ids_d, (r, k + 1)), pick, total],
        axis=1,
    )
    return packed, pick


def _flat(be: Any, ids: Tensor, width: int) -> Tensor:
    """Row ``r``'s ids ``[R, m]`` (int) into a ``[R * width]`` table as ``ids + r * width``,
    ``[1, R*m]`` (int) for `take`."""
    r, m = be.shape(ids)
    if r == 1:
        return ids
    offsets = be.asarray((np.arange(r, dtype=np.float32) * width)[:, None])
    return be.astype(be.reshape(be.add(be.astype(ids, "float32"), offsets), (1, r * m)), "int32")
