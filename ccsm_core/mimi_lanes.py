"""Several jobs' Mimi streams decoded together: one `MimiBatchDecoder` shared by their lanes.

Each job (a `ccsm_core.pipeline.speak` run) opens a `MimiLane`, its one Mimi stream, and
pushes chunks of frames to it; the chunks only queue. `MimiLane.take` returns the lane's audio
decoded so far. When the lane still has chunks queued, it decodes in rounds until its queue is
empty; a round takes the first queued chunk of *every* lane and decodes each run of lanes in
neighbouring slots whose chunks have the same length in one batched step. So jobs interleaved
a turn at a time (`ccsm_core.speak_many`, the server engine) decode their frames together.

Latency rule: a chunk is decoded at the latest when its own lane calls `take` (the speech
pipeline does at every sentence end, and in stream mode at the turn after each frame), earlier
when another lane's `take` runs a round while it is queued.

Each chunk is decoded as the lane's own `MimiStreamDecoder` would step it (bitwise the same
audio). Chunks pushed after `MimiLane.tentative` may be dropped with `MimiLane.undo` (a sentence
that will be generated again): if a round decoded some of them already, the stream's state is
put back from the copy taken before the first one. A lane beyond the batch's slots, or on a
decoder that cannot batch (MLX), decodes alone with its own stream decoder.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import numpy as np

from .models.mimi_batch import MimiBatchDecoder

SIZES_KEPT = 4096  # batched steps whose sizes are kept (a server's lanes run for days)


class MimiLanes:
    """Up to ``slots`` Mimi streams (lanes) decoded together; more lanes decode alone."""

    def __init__(self, mimi: Any, slots: int) -> None:
        self.mimi = mimi
        self.decoder = MimiBatchDecoder(mimi, slots)
        self._lanes: list[MimiLane] = []  # the lane in each slot, slots 0..n-1
        self.sizes: deque[int] = deque(maxlen=SIZES_KEPT)  # streams decoded in each recent batched step

    def open(self) -> MimiLane:
        """A new stream (close it when the job ends)."""
        dec = self.decoder
        if not dec.batched or len(self._lanes) == dec.slots:
            return MimiLane(self.mimi)
        slot = len(self._lanes)
        dec.reset(slot)
        lane = MimiLane(self.mimi, self, slot)
        self._lanes.append(lane)
        return lane

    def _close(self, lane: MimiLane) -> None:
        """Free the lane's slot: the last lane moves into it (slots stay 0..n-1)."""
        j, last = lane.slot, len(self._lanes) - 1
        assert j is not None and self._lanes[j] is lane
        if j != last:
            moved = self._lanes[last]
            self.decoder.move(last, j)
            moved.slot = j
            self._lanes[j] = moved
        self._lanes.pop()

    def _round(self) -> None:
        """Decode the first queued chunk of every lane: one step per run of neighbouring lanes
        with chunks of one length."""
        j, lanes = 0, self._lanes
        while j < len(lanes):
            if not lanes[j]._queue:
                j += 1
                continue
            k = len(lanes[j]._queue[0])
            end = j + 1
            while end < len(lanes) and _head_len(lanes[end]) == k:
                end += 1
            run = lanes[j:end]
            for lane in run:
                lane._before_decode()
            codes = np.stack([lane._queue.popleft().T for lane in run])
            waves = self.decoder.step(codes, first=j)
            self.sizes.append(len(run))
            for lane, wave in zip(run, waves):
                lane._done.append(wave)
            j = end


def _head_len(lane: MimiLane) -> int:
    return len(lane._queue[0]) if lane._queue else 0


class MimiLane:
    """One job's Mimi stream: in slot ``slot`` of ``lanes``, or (``slot`` None) decoded alone
    by its own `MimiStreamDecoder`."""

    def __init__(self, mimi: Any, lanes: MimiLanes | None = None, slot: int | None = None) -> None:
        self.lanes, self.slot = lanes, slot
        self._own = mimi.stream_decoder() if slot is None else None
        self._queue: deque[np.ndarray] = deque()  # chunks [k, n] not decoded yet
        self._done: list[np.ndarray] = []  # audio decoded, not taken yet
        self._mark: int | None = None  # len(_done) when `tentative` was called
        self._saved: Any = None  # the stream's state before the first tentative chunk decoded
        self.closed = False

    def push(self, chunk: np.ndarray) -> None:
        """Queue ``chunk [k, n]`` (k frames of codes) after everything pushed before."""
        if len(chunk):
            self._queue.append(chunk)

    def take(self) -> np.ndarray:
        """The audio of every chunk pushed so far and not yet taken (decoding what is queued)."""
        if self._own is not None:
            while self._queue:
                self._done.append(self._own.step(self._queue.popleft().T))
        while self._queue:
            assert self.lanes is not None
            self.lanes._round()
        out = np.concatenate([np.zeros(0, np.float32), *self._done])
        self._done.clear()
        self._mark, self._saved = None, None
        return out

    def tentative(self) -> None:
        """Chunks pushed from now until the next `take` may be dropped by `undo`."""
        assert not self._queue, "take the queued audio before a tentative part"
        self._mark, self._saved = len(self._done), None

    def undo(self) -> None:
        """Drop the chunks pushed since `tentative` (and their audio, if decoded already)."""
        assert self._mark is not None, "undo without tentative"
        self._queue.clear()
        del self._done[self._mark :]
        if self._saved is not None:
            assert self.lanes is not None and self.slot is not None
            self.lanes.decoder.restore(self.slot, self._saved)
        self._mark, self._saved = None, None

    def _before_decode(self) -> None:
        if self._mark is not None and self._saved is None:
            assert self.lanes is not None and self.slot is not None
            self._saved = self.lanes.decoder.save(self.slot)

    def close(self) -> None:
        """Leave the batch (the job ended, failed or was closed); queued chunks are dropped."""
        if self.closed:
            return
        self.closed = True
        self._queue.clear()
        if self.lanes is not None and self.slot is not None:
            self.lanes._close(self)
            self.slot = None
