"""Mimi decoding of several streams at once: a chunk of frames of each of several streams per step.

A `MimiBatchDecoder` holds the streaming decoder state of up to ``slots`` streams in shared
buffers, one row block per slot: the upsample's overlap tail, the decoder transformer's KV
ring (``context + RING_SLACK`` rows a slot, with each slot's positions on the host) and every
SEANet convolution's tail. `reset` gives a joining stream fresh state, `move` copies a stream's
rows to another slot (the last stream moves into a freed one, as
`ccsm_core.slot_batch.SlotBatch` does), `save` / `restore` copy a stream out and back.
`step` decodes ``k`` frames (up to `max_frames`) of each stream in the neighbouring slots
``first..first+B-1`` in one pass: products over all streams' rows at once, convolutions over
``[B, C, T]``, attention per stream over its own ring rows; a backend that captures replays one
graph per ``(B, k, first)``.

Each stream's audio is exactly what its own `MimiStreamDecoder` gives for the same chunks:
products go through ``matmul_rows`` (each stream's rows as alone), convolutions through the
backend's ``conv1d_batch`` / ``conv_transpose1d_batch`` where it has them (each stream as
alone; ggml-cpu) and otherwise stream by stream inside the step, and everything else works
element by element. Backends without ``matmul_rows`` (MLX) decode stream by stream with one
`MimiStreamDecoder` a slot; so do decoders whose SEANet pads by replication (a fresh stream
differs there) or whose transformer ring cannot hold a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np

from ..backends.base import Replays, Tensor, matmul_rows
from ..errors import BUG_HINT, UsageError
from ..limits import check_allocation
from .mimi_layers import CausalConv1d, CausalConvTranspose1d, Elu, ResBlock, Sequential
from .mimi_transformer import RING_SLACK, ring_window

MAX_CAPTURED = 48  # captured step graphs kept (one per batch size, frames and first slot)
MAX_FRAMES = 64  # frames of a stream one step may take at most


@dataclass
class _Rows:
    """A buffer of ``slots * per_slot`` rows of ``shape`` (a layer's state for every slot)."""

    buf: Tensor
    per_slot: int
    shape: tuple[int, ...]  # of one row


class MimiBatchDecoder:
    """Streaming Mimi decoding of up to ``slots`` streams at once (see the module doc)."""

    def __init__(self, mimi: Any, slots: int) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise UsageError(f"Mimi batch size must be a positive integer, got {slots!r}", "give 1 or more slots")
        be = mimi.be
        self.mimi, self.slots, self.be = mimi, slots, be
        tr = mimi.decoder_transformer
        self.t = mimi.upsample.stride  # transformer positions per frame
        self.ring = tr.context + RING_SLACK
        # frames a step may take: the ring must hold a step's positions beside the context
        self.max_frames = max(k for k in range(1, MAX_FRAMES + 1) if _fits(tr, self.ring, self.t * k) or k == 1)
        fits = bool(tr.layers) and _fits(tr, self.ring, self.t)
        self.batched = hasattr(be, "matmul_rows") and fits and not _replicates(mimi.decoder)
        if not self.batched:
            self.max_frames = MAX_FRAMES
        self._alone: list[Any] = [None] * slots  # stream by stream: a MimiStreamDecoder a slot
        if not self.batched:
            return
        per_slot = 4 * (2 * self.ring * tr.d * len(tr.layers) + _state_floats(mimi))
        check_allocation(slots * per_slot, f"the Mimi decoder state of {slots} streams", "batch fewer streams")
        self._cells: list[_Rows] = []
        self._up = self._rows((mimi.upsample.cout, mimi.upsample.pad_total))
        self._rings = [
            (self._rows((tr.heads, tr.head_dim), self.ring), self._rows((tr.heads, tr.head_dim), self.ring))
            for _ in tr.layers
        ]
        self._dec = self._states(mimi.decoder)
        self._pos = np.full((slots, self.ring), -1, np.int64)  # absolute position in each ring row
        self._offset = np.zeros(slots, np.int64)  # each slot's next position
        capture = getattr(be, "capture", None)
        self._graphs = Replays(be, MAX_CAPTURED) if capture is not None else None

    # -- slots -------------------------------------------------------------------------------
    def reset(self, slot: int) -> None:
        """Fresh state in ``slot`` (a stream joins there)."""
        self._check_slot(slot)
        if not self.batched:
            self._alone[slot] = self.mimi.stream_decoder()
            return
        be = self.be
        for c in self._cells:
            c.buf = be.write(c.buf, be.asarray(np.zeros((c.per_slot, *c.shape), np.float32)), slot * c.per_slot)
        self._pos[slot] = -1
        self._offset[slot] = 0

    def move(self, src: int, dst: int) -> None:
        """Copy the stream in slot ``src`` to slot ``dst`` (``src`` is then free)."""
        self._check_slot(src)
        self._check_slot(dst)
        if src == dst:
            return
        if not self.batched:
            self._alone[dst], self._alone[src] = self._alone[src], None
            return
        self.restore(dst, self.save(src))

    def save(self, slot: int) -> Any:
        """A copy of the stream in ``slot`` (its state rows, on the host), for `restore`."""
        self._check_slot(slot)
        if not self.batched:
            raise UsageError("a stream-by-stream Mimi batch keeps no copies of its streams", BUG_HINT)
        be = self.be
        rows = [be.to_numpy(be.slice(c.buf, 0, slot * c.per_slot, (slot + 1) * c.per_slot)).copy() for c in self._cells]
        return rows, self._pos[slot].copy(), int(self._offset[slot])

    def restore(self, slot: int, saved: Any) -> None:
        """Put a stream `save` copied into ``slot`` (its state as it was then)."""
        self._check_slot(slot)
        rows, pos, offset = saved
        be = self.be
        for c, r in zip(self._cells, rows):
            c.buf = be.write(c.buf, be.asarray(r), slot * c.per_slot)
        self._pos[slot], self._offset[slot] = pos, offset

    def _check_slot(self, slot: int) -> None:
        if isinstance(slot, bool) or not isinstance(slot, (int, np.integer)) or not 0 <= slot < self.slots:
            raise UsageError(f"Mimi batch slot {slot!r} is not in 0..{self.slots - 1}", "use a slot of this batch")

    # -- decoding ----------------------------------------------------------------------------
    def step(self, codes: Any, first: int = 0) -> np.ndarray:
        """Codes ``[B, n, k]`` of the streams in slots ``first..first+B-1`` -> their next ``k``
        frames of audio, ``float32 [B, k * samples_per_frame]`` (each stream as its own
        `MimiStreamDecoder` stepped with those ``k`` frames)."""
        m = self.mimi
        c = np.asarray(codes)
        k = c.shape[2] if c.ndim == 3 else 0
        if c.ndim != 3 or not 1 <= k <= self.max_frames or not 1 <= c.shape[0] <= self.slots:
            raise UsageError(
                f"a Mimi batch step takes codes [B, {m.num_codebooks}, k] with B in 1..{self.slots} and k in "
                f"1..{self.max_frames}, got {list(c.shape)}",
                "pass up to that many frames of each active stream",
            )
        self._check_slot(first)
        self._check_slot(first + c.shape[0] - 1)
        c = np.stack([m._check_codes(c[j]) for j in range(c.shape[0])])
        b = c.shape[0]
        if not self.batched:
            return np.stack([self._stream(first + j).step(c[j]) for j in range(b)])
        ring, tr, t = self.ring, m.decoder_transformer, self.t * k
        windows = [ring_window(self._pos[first + j], int(self._offset[first + j]), t, tr.context) for j in range(b)]
        pos = np.concatenate([w[0] for w in windows if w is not None])
        rows = np.concatenate([w[1] + (first + j) * ring for j, w in enumerate(windows) if w is not None])
        mask = np.concatenate([w[2] for w in windows if w is not None])
        ids = m.quantizer.ids(c.transpose(1, 0, 2).reshape(m.num_codebooks, b * k))  # stream-major columns
        args = (*ids, pos, rows.astype(np.int32), mask)
        fn = partial(self._graph, n_ids=len(ids), b=b, k=k, first=first)
        if self._graphs is None:
            wave = self.be.to_numpy(fn(*(self.be.asarray(a) for a in args)))
        else:
            wave = self._graphs.replay((b, k, first), lambda *xs: [fn(*xs)], args)[0]
        for j, w in enumerate(windows):
            assert w is not None
            self._pos[first + j, w[1]] = w[0]
            self._offset[first + j] += t
        return np.asarray(wave, np.float32).reshape(b, -1)

    def _stream(self, slot: int) -> Any:
        if self._alone[slot] is None:
            raise UsageError(f"Mimi batch slot {slot} has no stream", "reset a slot before decoding into it")
        return self._alone[slot]

    def _graph(self, *inputs: Tensor, n_ids: int, b: int, k: int, first: int) -> Tensor:
        """``k`` frames of ``b`` streams from slot ``first``: codes -> latent -> upsample ->
        transformer -> SEANet."""
        m, be, tr = self.mimi, self.mimi.be, self.mimi.decoder_transformer
        q = m.quantizer
        first_ids, rest = inputs[0], (inputs[1] if n_ids > 1 else None)
        lat = matmul_rows(be, be.embedding(q.tables[0], first_ids), q.out_proj[0], k)  # [B*k, D]
        if rest is not None:
            emb = be.embedding(q.tables[1], rest)
            summed = be.sum(be.reshape(emb, (q.n - 1, b * k, be.shape(emb)[-1])), 0)
            lat = be.add(lat, matmul_rows(be, summed, q.out_proj[1], k))
        h = be.transpose(be.reshape(lat, (b, k, be.shape(lat)[1])), (0, 2, 1))  # [B, D, k]
        h = _convtr_step(be, m.upsample, h, self._up, b, first)  # [B, D, t*k]
        t = self.t * k
        x = be.reshape(be.transpose(h, (0, 2, 1)), (b * t, be.shape(h)[1]))
        pos, rows, mask = inputs[n_ids:]
        rings = [_RingView(kb.buf, vb.buf) for kb, vb in self._rings]
        x = tr.batch_step_in_place(be, x, pos, rows, mask, rings, t, first)
        for (kb, vb), r in zip(self._rings, rings):
            kb.buf, vb.buf = r.k, r.v
        h = be.transpose(be.reshape(x, (b, t, be.shape(x)[1])), (0, 2, 1))
        wave = _run(be, m.decoder, h, self._dec, b, first)  # [B, 1, samples]
        return be.reshape(wave, (b, be.shape(wave)[2]))

    # -- state -------------------------------------------------------------------------------
    def _rows(self, shape: tuple[int, ...], per_slot: int = 1) -> _Rows:
        c = _Rows(self.be.zeros((self.slots * per_slot, *shape)), per_slot, shape)
        self._cells.append(c)
        return c

    def _states(self, layer: Any) -> Any:
        """Batch state mirroring ``layer``'s streaming state (None where it has none)."""
        if isinstance(layer, Sequential):
            return [self._states(sub) for sub in layer.layers]
        if isinstance(layer, CausalConv1d):
            return self._rows((layer.cin, layer.pad_total)) if layer.pad_total else None
        if isinstance(layer, CausalConvTranspose1d):
            return self._rows((layer.cout, layer.pad_total))
        return None


@dataclass
class _RingView:
    k: Tensor
    v: Tensor


def _fits(tr: Any, ring: int, t: int) -> bool:
    return ring_window(np.full(ring, -1), 0, t, tr.context) is not None


def _replicates(layer: Any) -> bool:
    """A convolution of ``layer`` pads a stream's start by replication (not zeros)."""
    if isinstance(layer, Sequential):
        return any(_replicates(sub) for sub in layer.layers)
    return isinstance(layer, CausalConv1d) and layer.pad_total > 0 and layer.pad_mode == "replicate"


def _state_floats(mimi: Any) -> int:
    def count(layer: Any) -> int:
        if isinstance(layer, Sequential):
            return sum(count(sub) for sub in layer.layers)
        if isinstance(layer, CausalConv1d):
            return layer.cin * layer.pad_total
        if isinstance(layer, CausalConvTranspose1d):
            return layer.cout * layer.pad_total
        return 0

    return count(mimi.decoder) + count(mimi.upsample)


def _conv(be: Any, layer: CausalConv1d, x: Tensor, b: int) -> Tensor:
    batch = getattr(be, "conv1d_batch", None)
    if batch is not None:
        return batch(x, layer.w, layer.b, stride=layer.stride, dilation=layer.dilation)
    return _each(be, x, b, lambda xi: layer._conv(be, xi))


def _convtr(be: Any, layer: CausalConvTranspose1d, x: Tensor, b: int) -> Tensor:
    batch = getattr(be, "conv_transpose1d_batch", None)
    if batch is not None:
        return batch(x, layer.w, layer.b, stride=layer.stride, groups=layer.groups)
    return _each(be, x, b, lambda xi: layer._convtr(be, xi))


def _each(be: Any, x: Tensor, b: int, one: Any) -> Tensor:
    """``one(x_j [C, T])`` for each stream of ``x [B, C, T]``, stacked."""
    shape = be.shape(x)[1:]
    outs = []
    for j in range(b):
        y = one(be.reshape(be.slice(x, 0, j, j + 1), shape))
        outs.append(be.reshape(y, (1, *be.shape(y))))
    return outs[0] if b == 1 else be.concat(outs, 0)


def _conv_step(be: Any, layer: CausalConv1d, x: Tensor, st: _Rows | None, b: int, first: int) -> Tensor:
    """`CausalConv1d.step` of ``x [B, C, T]`` with each stream's tail in ``st`` from slot
    ``first`` on (zero padding)."""
    tp = layer.pad_total
    if tp:
        assert st is not None
        x = be.concat([be.slice(st.buf, 0, first, first + b), x], 2)
        n = be.shape(x)[2]
        st.buf = be.write(st.buf, be.slice(x, 2, n - tp, n), first)
    return _conv(be, layer, x, b)


def _convtr_step(be: Any, layer: CausalConvTranspose1d, x: Tensor, st: _Rows, b: int, first: int) -> Tensor:
    """`CausalConvTranspose1d.step` of ``x [B, C, T]``: each stream's overlap-add with its tail
    (slots ``first..first+B-1``)."""
    n, tp = be.shape(x)[2] * layer.stride, layer.pad_total
    y = _convtr(be, layer, x, b)
    tails = be.slice(st.buf, 0, first, first + b)
    z = be.concat([be.add(be.slice(y, 2, 0, tp), tails), be.slice(y, 2, tp, n + tp)], 2)
    tail = be.slice(z, 2, n, n + tp)
    if layer.neg_b is not None:
        tail = be.add(tail, layer.neg_b)
    st.buf = be.write(st.buf, tail, first)
    return be.slice(z, 2, 0, n)


def _run(be: Any, layer: Any, x: Tensor, st: Any, b: int, first: int) -> Tensor:
    """``layer.step`` over ``x [B, C, T]`` with batch state ``st`` (from `_states`) of slots
    ``first..first+B-1``."""
    if isinstance(layer, ResBlock):
        return be.add(x, _run_seq(be, layer, x, st, b, first))
    if isinstance(layer, Sequential):
        return _run_seq(be, layer, x, st, b, first)
    if isinstance(layer, CausalConv1d):
        return _conv_step(be, layer, x, st, b, first)
    if isinstance(layer, CausalConvTranspose1d):
        return _convtr_step(be, layer, x, st, b, first)
    if isinstance(layer, Elu):
        return be.elu(x, 1.0)
    raise UsageError(f"Mimi batch decoding has no step for {type(layer).__name__}", "decode stream by stream")


def _run_seq(be: Any, layer: Sequential, x: Tensor, st: list, b: int, first: int) -> Tensor:
    for sub, s in zip(layer.layers, st):
        x = _run(be, sub, x, s, b, first)
    return x
