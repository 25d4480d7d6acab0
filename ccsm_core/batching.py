"""Continuous batching of CSM streams: several utterances generated in one pass per frame.

A `FrameBatch` holds up to ``slots`` streams. Whoever wants a frame calls `FrameBatch.step`
(through a stream's iterator): it admits waiting streams into free slots (prefilling each on its
own generator's cache, then copying the rows into the slot), runs one batched backbone row and
one batched decoder pass for every active stream, and hands each stream its frame. A stream that
ends leaves its slot between frames and a waiting one joins. Frames of streams whose reader is
busy wait in the stream's queue (32 codes each), so readers take turns in any order.

Every stream gets exactly the frames it gets alone with the same seed (`ccsm_core.models.csm_batch`).
Not thread-safe: one thread drives a batch (the server's worker, a CLI loop).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import UsageError
from .models.csm_batch import BatchCaches, backbone_rows, decode_frames
from .models.prompt_cache import Chunk
from .slot_batch import Reader, SlotBatch


@dataclass(eq=False)
class _Stream:
    generator: Any
    chunks: list[Chunk]
    sampler: Any
    max_frames: int
    pin: int
    progress: Callable[[int, int], None] | None
    out: deque[np.ndarray] = field(default_factory=deque)  # frames made, not read yet
    slot: int = -1
    position: int = 0  # the backbone position of its next row
    h: np.ndarray = field(default_factory=lambda: np.zeros((1, 0), np.float32))  # backbone state for its next frame
    c0: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))  # and its codebook-0 logits
    row: np.ndarray | None = None  # codes of its last frame (the next backbone row)
    made: int = 0
    done: bool = False
    error: BaseException | None = None


class FrameBatch(SlotBatch[_Stream]):
    """Up to ``slots`` streams of one CSM model, stepped together (see module doc)."""

    def __init__(self, model: Any, slots: int = 8) -> None:
        super().__init__(slots, model.be)
        self.model = model
        self.ncb = model.cfg.audio_num_codebooks
        self._caches: BatchCaches | None = None
        self.stream_frames = 0  # frames made, summed over streams

    def frames(
        self,
        generator: Any,
        chunks: list[Chunk],
        sampler: Any,
        max_frames: int,
        *,
        pin: int = 0,
        progress: Callable[[int, int], None] | None = None,
    ) -> Iterator[np.ndarray]:
        """Join a new stream now and return its frames: ``generator`` prefills ``chunks``
        (reusing its prompt cache) when the stream gets a slot; ``sampler`` is its
        `ccsm_core.generator.FrameSampler`. Closing (or dropping) the iterator early frees the
        slot."""
        if generator.model is not self.model:
            raise UsageError("a batch serves one model: this generator has another", "make one batch per model")
        st = _Stream(generator, chunks, sampler, max_frames, pin, progress)
        self._waiting.append(st)
        return Reader(self, st)

    # -- stepping ----------------------------------------------------------------------------
    def step(self) -> None:
        """Admit waiting streams into free slots, then one frame for every active stream."""
        self._admit_waiting()
        if not self._active:
            return
        model = self.model
        caches = self._batch_caches()
        b = len(self._active)
        if any(
            st.row is not None for st in self._active
        ):  # joiners' backbone states come from their prefill: their rows are placeholders
            tokens = np.zeros((b, self.ncb + 1), np.int64)
            mask = np.zeros_like(tokens, dtype=bool)
            mask[:, :-1] = True
            for j, st in enumerate(self._active):
                if st.row is not None:
                    tokens[j, :-1] = st.row
            positions = np.array([st.position for st in self._active], np.int64)
            h, c0 = self._per_group(
                lambda a, z: backbone_rows(model, caches, tokens[a:z], mask[a:z], positions[a:z], a), b
            )
            for j, st in enumerate(self._active):
                if st.row is not None:
                    st.h, st.c0 = h[j : j + 1], c0[j]
                    st.position += 1
        samplers = []
        for st in self._active:
            st.sampler.frame_no = st.made
            samplers.append(st.sampler)
        h_all = np.concatenate([st.h for st in self._active])
        c0_all = np.stack([st.c0 for st in self._active])
        (codes,) = self._per_group(
            lambda a, z: (decode_frames(model, caches, h_all[a:z], c0_all[a:z], samplers[a:z], a),), b
        )
        self.steps += 1
        for st, frame in zip(list(self._active), codes):
            st.made += 1
            if not frame.any():
                st.done = True
            else:
                self.stream_frames += 1
                st.out.append(frame)
                st.row = frame
                if st.progress is not None:
                    st.progress(st.made, st.max_frames)
                st.done = st.made >= st.max_frames
            if st.done:
                self._release(st)

    def _per_group(self, run: Callable[[int, int], tuple[np.ndarray, ...]], b: int) -> tuple[np.ndarray, ...]:
        """``run(start, stop)`` over all ``b`` streams at once where the backend batches
        (`batched`), else stream by stream, the results joined."""
        if self.batched:
            return run(0, b)
        parts = [run(j, j + 1) for j in range(b)]
        return tuple(np.concatenate(p) for p in zip(*parts))

    def _batch_caches(self) -> BatchCaches:
        if self._caches is None:
            self._caches = BatchCaches(self.model, self.slots)
        return self._caches

    def _admit(self, st: _Stream) -> None:
        """Prefill ``st`` on its generator's own cache and copy its rows into the next slot."""
        gen = st.generator
        st.h = np.asarray(gen.prefill(st.chunks, st.pin), np.float32).reshape(1, -1)
        st.c0 = self.model.codebook0_logits(st.h)
        bb_cache, _ = gen.caches()
        st.position = bb_cache.length
        st.slot = len(self._active)
        self._batch_caches().load(st.slot, bb_cache, st.position)
        self._active.append(st)

    def _move(self, st: _Stream, slot: int) -> None:
        self._batch_caches().move(st.slot, slot, st.position)
