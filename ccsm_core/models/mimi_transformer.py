"""Mimi's causal transformers (moshi 0.2.2 ``ProjectedTransformer``), time-major ``[T, D]``.

Layer: ``x + ls1 * attn(LN1(x))``, then ``x + ls2 * linear2(gelu(linear1(LN2(x))))``. Attention
uses interleaved RoPE (base ``max_period``) and sees keys with ``0 <= pos_q - pos_k < context``.
Batch mode attends query blocks to their key window; streaming keeps a ring KV cache of
``context + RING_SLACK`` slots with absolute positions, so streamed output equals batch output.
A step of at most ``RING_SLACK + 1`` positions writes its keys into the ring first and attends to
the ring alone (no copy of the window); a longer step attends to the ring and its own keys.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..backends.base import matmul_rows
from ..limits import check_allocation
from .mimi_layers import Weights

Tensor = Any
_NEG_INF = np.float32(-np.inf)
RING_SLACK = 15  # ring slots beyond the context: steps of up to 16 positions attend in place


def window_mask(pos_q: np.ndarray, pos_k: np.ndarray, context: int) -> np.ndarray:
    """Additive mask ``[S, T]``: 0 where ``pos_k >= 0`` and ``0 <= pos_q - pos_k < context``."""
    delta = pos_q[:, None] - pos_k[None, :]
    ok = (pos_k[None, :] >= 0) & (delta >= 0) & (delta < context)
    return np.where(ok, np.float32(0), _NEG_INF).astype(np.float32)


def ring_window(
    ring_pos: np.ndarray, offset: int, t: int, context: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """A ring step of ``t`` positions from ``offset`` over a ring holding positions ``ring_pos``
    (-1: empty): ``(positions [t], ring rows [t], mask [t, slots])``, or None when the ring is too
    short for it (a key its first query needs would be overwritten)."""
    slots = ring_pos.shape[0]
    if t + context - 1 > slots:
        return None
    new_pos = np.arange(offset, offset + t, dtype=np.int64)
    rows = new_pos % slots
    after = ring_pos.copy()
    after[rows] = new_pos
    return new_pos.astype(np.int32), rows.astype(np.int32), window_mask(new_pos, after, context)


@dataclass
class _Layer:
    n1w: Tensor
    n1b: Tensor
    in_proj: Tensor
    out_proj: Tensor
    n2w: Tensor
    n2b: Tensor
    lin1: Tensor
    lin2: Tensor
    ls1: Tensor
    ls2: Tensor


@dataclass
class _Ring:
    k: Tensor
    v: Tensor
    pos: np.ndarray  # absolute position held by each slot, -1 if empty


@dataclass
class TransformerState:
    """Streaming state: the next absolute position and one KV ring per layer."""

    offset: int = 0
    rings: list = field(default_factory=list)


class MimiTransformer:
    """Causal transformer with sliding-window attention; optional input/output projections."""

    def __init__(self, ws: Weights, prefix: str, tc: dict) -> None:
        d, h = tc["d_model"], tc["num_heads"]
        ff, din = tc["dim_feedforward"], tc["input_dimension"]
        douts = tc["output_dimensions"]
        self.d, self.heads, self.head_dim = d, h, d // h
        self.context = int(tc["context"])
        self.scale = 1.0 / math.sqrt(self.head_dim)
        half = self.head_dim // 2
        self.freqs = np.exp(
            np.arange(half, dtype=np.float32) * np.float32(-math.log(tc["max_period"]) * 2 / self.head_dim)
        ).astype(np.float32)
        self.in_proj = ws.get(f"{prefix}.input_proj.weight", (d, din)) if din != d else None
        self.out_proj = ws.get(f"{prefix}.output_projs.0.weight", (douts[0], d)) if douts[0] != d else None
        self.layers = []
        for i in range(tc["num_layers"]):
            p = f"{prefix}.transformer.layers.{i}."
            self.layers.append(
                _Layer(
                    n1w=ws.get(p + "norm1.weight", (d,)),
                    n1b=ws.get(p + "norm1.bias", (d,)),
                    in_proj=ws.get(p + "self_attn.in_proj_weight", (3 * d, d)),
                    out_proj=ws.get(p + "self_attn.out_proj.weight", (d, d)),
                    n2w=ws.get(p + "norm2.weight", (d,)),
                    n2b=ws.get(p + "norm2.bias", (d,)),
                    lin1=ws.get(p + "linear1.weight", (ff, d)),
                    lin2=ws.get(p + "linear2.weight", (d, ff)),
                    ls1=ws.get(p + "layer_scale_1.scale", (d,)),
                    ls2=ws.get(p + "layer_scale_2.scale", (d,)),
                )
            )

    # --- shared pieces ---------------------------------------------------------------------
    def _qkv(self, be: Any, lay: _Layer, x: Tensor, pos: Tensor, mm: Any = None) -> tuple[Tensor, Tensor, Tensor]:
        t, d = be.shape(x)[0], self.d
        qkv = (mm or be.matmul)(be.layer_norm(x, lay.n1w, lay.n1b, 1e-5), lay.in_proj)  # [T, 3D]
        shape = (t, self.heads, self.head_dim)
        q, k, v = (be.reshape(be.slice(qkv, 1, i * d, (i + 1) * d), shape) for i in range(3))
        return be.rope(q, pos, self.freqs, True), be.rope(k, pos, self.freqs, True), v

    def _finish(self, be: Any, lay: _Layer, x: Tensor, att: Tensor, mm: Any = None) -> Tensor:
        t, mm = be.shape(x)[0], mm or be.matmul
        att = mm(be.reshape(att, (t, self.d)), lay.out_proj)
        x = be.add(x, be.mul(att, lay.ls1))
        h = be.layer_norm(x, lay.n2w, lay.n2b, 1e-5)
        h = mm(be.gelu(mm(h, lay.lin1)), lay.lin2)
        return be.add(x, be.mul(h, lay.ls2))

    def _project_in(self, be: Any, x: Tensor, mm: Any = None) -> Tensor:
        return (mm or be.matmul)(x, self.in_proj) if self.in_proj is not None else x

    def _project_out(self, be: Any, x: Tensor, mm: Any = None) -> Tensor:
        return (mm or be.matmul)(x, self.out_proj) if self.out_proj is not None else x

    # --- batch -----------------------------------------------------------------------------
    def __call__(self, be: Any, x: Tensor) -> Tensor:
        """``x [T, Din]`` from position 0 -> ``[T, Dout]``."""
        x = self._project_in(be, x)
        t, ctx = be.shape(x)[0], self.context
        positions = np.arange(t, dtype=np.int32)
        pos = be.asarray(positions)
        blocks = [(s, min(s + ctx, t)) for s in range(0, t, ctx)]
        masks = []
        for s, e in blocks:
            ks = max(0, s - ctx + 1)
            masks.append((ks, be.asarray(window_mask(positions[s:e], positions[ks:e], ctx))))
        for lay in self.layers:
            q, k, v = self._qkv(be, lay, x, pos)
            outs = []
            for (s, e), (ks, mask) in zip(blocks, masks):
                outs.append(
                    be.attention(be.slice(q, 0, s, e), be.slice(k, 0, ks, e), be.slice(v, 0, ks, e), mask, self.scale)
                )
            x = self._finish(be, lay, x, outs[0] if len(outs) == 1 else be.concat(outs, 0))
        return self._project_out(be, x)

    # --- streaming -------------------------------------------------------------------------
    def new_state(self, be: Any) -> TransformerState:
        slots = self.context + RING_SLACK
        shape = (slots, self.heads, self.head_dim)
        check_allocation(
            2 * 4 * slots * self.heads * self.head_dim * len(self.layers),
            "the Mimi transformer's streaming cache",
            f"the Mimi config's transformer.context {self.context} is too large or broken",
        )
        rings = [_Ring(be.zeros(shape), be.zeros(shape), np.full(slots, -1, np.int64)) for _ in self.layers]
        return TransformerState(0, rings)

    def ring_inputs(self, st: TransformerState, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """For a step of ``t`` positions that fits the ring (every key its first query needs
        survives the write): ``(positions [t], ring rows [t], mask [t, slots])``; else None."""
        if not st.rings:
            return None
        return ring_window(st.rings[0].pos, st.offset, t, self.context)

    def step_in_place(
        self, be: Any, x: Tensor, pos: Tensor, rows: Tensor, mask: Tensor, st: TransformerState
    ) -> Tensor:
        """A step on tensors from `ring_inputs` (the caller then calls `advance`): writes each
        layer's keys at ``rows`` and attends over the ring; ``x [T, Din] -> [T, Dout]``."""
        x = self._project_in(be, x)
        for lay, ring in zip(self.layers, st.rings):
            q, k, v = self._qkv(be, lay, x, pos)
            ring.k = be.write(ring.k, k, rows)
            ring.v = be.write(ring.v, v, rows)
            x = self._finish(be, lay, x, be.attention(q, ring.k, ring.v, mask, self.scale))
        return self._project_out(be, x)

    def batch_step_in_place(
        self, be: Any, x: Tensor, pos: Tensor, rows: Tensor, mask: Tensor, rings: list[Any], t: int, first: int = 0
    ) -> Tensor:
        """`step_in_place` for ``B`` streams of ``t`` positions each: ``x [B*t, Din]``, ring rows
        of stream ``b`` at ``(first + b) * slots`` in ``rings`` (``.k``, ``.v`` each ``[B_max * slots, H, Dh]``), ``mask
        [B*t, slots]``. Products take each stream's ``t`` rows as alone (`matmul_rows`);
        attention runs per stream over its own ring rows. Returns ``[B*t, Dout]``."""

        def mm(a: Tensor, w: Tensor) -> Tensor:
            return matmul_rows(be, a, w, t)

        n = be.shape(x)[0] // t
        slots = be.shape(mask)[1]
        x = self._project_in(be, x, mm)
        for lay, ring in zip(self.layers, rings):
            q, k, v = self._qkv(be, lay, x, pos, mm)
            ring.k = be.write(ring.k, k, rows)
            ring.v = be.write(ring.v, v, rows)
            att = [
                be.attention(
                    be.slice(q, 0, b * t, (b + 1) * t),
                    be.slice(ring.k, 0, (first + b) * slots, (first + b + 1) * slots),
                    be.slice(ring.v, 0, (first + b) * slots, (first + b + 1) * slots),
                    be.slice(mask, 0, b * t, (b + 1) * t),
                    self.scale,
                )
                for b in range(n)
            ]
            x = self._finish(be, lay, x, att[0] if n == 1 else be.concat(att, 0), mm)
        return self._project_out(be, x, mm)

    def advance(self, st: TransformerState, positions: np.ndarray, rows: np.ndarray) -> None:
        """Record an in-place step's positions in the rings' bookkeeping."""
        for ring in st.rings:
            ring.pos[rows] = positions
        st.offset += len(positions)

    def step(self, be: Any, x: Tensor, st: TransformerState) -> Tensor:
        """Continue the sequence with ``x [T, Din]``; returns ``[T, Dout]``."""
        t, ctx, p0 = be.shape(x)[0], self.context, st.offset
        ring_in = self.ring_inputs(st, t)
        if ring_in is not None:  # keys written into the ring first, attention over the ring alone
            new_pos, rows, mask = ring_in
            out = self.step_in_place(be, x, be.asarray(new_pos), be.asarray(rows), be.asarray(mask), st)
            self.advance(st, new_pos, rows)
            return out
        x = self._project_in(be, x)
        new_pos = np.arange(p0, p0 + t, dtype=np.int64)
        pos = be.asarray(new_pos.astype(np.int32))
        if not st.rings:  # no layers
            st.offset += t
            return self._project_out(be, x)
        ring_pos = st.rings[0].pos
        slots = ring_pos.shape[0]
        # ring slots to fill: the last min(t, slots) new positions, as at most two contiguous runs
        m = min(t, slots)
        first_slot = (p0 + t - m) % slots
        runs = [(t - m, first_slot, min(m, slots - first_slot))]
        if runs[0][2] < m:
            runs.append((t - m + runs[0][2], 0, m - runs[0][2]))
        mask = be.asarray(window_mask(new_pos, np.concatenate([ring_pos, new_pos]), ctx))
        for lay, ring in zip(self.layers, st.rings):
            q, k, v = self._qkv(be, lay, x, pos)
            keys, vals = be.concat([ring.k, k], 0), be.concat([ring.v, v], 0)
            for src, slot, n in runs:
                ring.k = be.write(ring.k, be.slice(k, 0, src, src + n), slot, axis=0)
                ring.v = be.write(ring.v, be.slice(v, 0, src, src + n), slot, axis=0)
            x = self._finish(be, lay, x, be.attention(q, keys, vals, mask, self.scale))
        for ring in st.rings:
            for src, slot, n in runs:
                ring.pos[slot : slot + n] = new_pos[src : src + n]
        st.offset += t
        return self._project_out(be, x)
