"""A check any backend can run: Mimi frames decoded in a batch (`MimiBatchDecoder`, streams
joining and leaving between frames) are bitwise what each stream's own `MimiStreamDecoder` gives."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from ..loading.demo import DEMO_MIMI, random_mimi_tensors
from ..models.mimi import Mimi
from ..models.mimi_batch import MimiBatchDecoder

SMALL_RING: dict[str, Any] = copy.deepcopy(DEMO_MIMI)
SMALL_RING["transformer"] = {**SMALL_RING["transformer"], "context": 5}  # a 20-row ring: a few frames wrap it


def small_mimi(be: Any, seed: int = 3, config: dict | None = None) -> Mimi:
    """The demo Mimi with a short attention window and non-zero biases (random weights)."""
    config = config or SMALL_RING
    rng = np.random.default_rng(seed)
    tensors = random_mimi_tensors(config, seed)
    for name, arr in tensors.items():
        if name.endswith(".bias") and "norm" not in name:
            tensors[name] = (0.1 * rng.standard_normal(arr.shape)).astype(np.float32)
    return Mimi.from_tensors(be, tensors, config)


# (first tick, frames) of each stream: more streams than slots, joining and leaving at
# different ticks, so slots fill, free up out of order (the last moves in) and refill
SCHEDULE = [(0, 9), (0, 3), (1, 12), (2, 5), (2, 7), (4, 4), (9, 6)]


def decode_together(mimi: Mimi, codes: list[np.ndarray], starts: list[int], slots: int) -> tuple[list, list[int]]:
    """Decode every stream's ``codes [n, T]`` through one `MimiBatchDecoder`, a stream joining
    at its start tick (or when a slot frees) and leaving after its last frame; returns each
    stream's audio and the batch size of every step."""
    dec = MimiBatchDecoder(mimi, slots)
    waiting = list(range(len(codes)))
    active: list[int] = []  # stream in each slot
    made = [0] * len(codes)
    audio: list[list[np.ndarray]] = [[] for _ in codes]
    sizes: list[int] = []
    tick = 0
    while waiting or active:
        for i in [i for i in waiting if starts[i] <= tick]:
            if len(active) < slots:
                waiting.remove(i)
                dec.reset(len(active))
                active.append(i)
        if active:
            frames = np.stack([codes[i][:, made[i] : made[i] + 1] for i in active])
            waves = dec.step(frames)
            sizes.append(len(active))
            for j, i in enumerate(active):
                audio[i].append(waves[j])
                made[i] += 1
            for i in [i for i in active if made[i] == codes[i].shape[1]]:
                j, last = active.index(i), len(active) - 1
                if j != last:
                    dec.move(last, j)
                    active[j] = active[last]
                active.pop()
        tick += 1
    return [np.concatenate(a) for a in audio], sizes


def check_batch_is_each_stream_alone(be: Any, slots: int = 4, mimi: Mimi | None = None) -> list[int]:
    """Assert the batch's audio equals each stream decoded alone (bitwise); returns the batch
    sizes stepped."""
    mimi = mimi or small_mimi(be)
    rng = np.random.default_rng(11)
    codes = [rng.integers(0, mimi.cardinality, (mimi.num_codebooks, n)) for _, n in SCHEDULE]
    alone = []
    for c in codes:
        dec = mimi.stream_decoder()
        alone.append(np.concatenate([dec.step(c[:, f : f + 1]) for f in range(c.shape[1])]))
    got, sizes = decode_together(mimi, codes, [s for s, _ in SCHEDULE], slots)
    for i, (g, want) in enumerate(zip(got, alone)):
        assert g.dtype == np.float32 and g.shape == want.shape, i
        np.testing.assert_array_equal(g, want, err_msg=f"stream {i}")
    return sizes


# (first slot, streams, frames) of each step: chunks of several lengths from any first slot
CHUNK_STEPS = [(0, 4, 1), (0, 2, 8), (2, 2, 4), (1, 3, 3), (0, 1, 8), (3, 1, 8), (0, 4, 2), (1, 2, 1), (0, 4, 8)]


def check_chunks_from_any_slot(be: Any, mimi: Mimi | None = None, slots: int = 4) -> MimiBatchDecoder:
    """Assert steps of ``k`` frames of the streams in slots ``first..first+B-1`` (`CHUNK_STEPS`)
    give each stream what its own decoder gives stepped with the same chunks (bitwise)."""
    mimi = mimi or small_mimi(be)
    rng = np.random.default_rng(7)
    codes = [rng.integers(0, mimi.cardinality, (mimi.num_codebooks, 40)) for _ in range(slots)]
    dec = MimiBatchDecoder(mimi, slots)
    for j in range(slots):
        dec.reset(j)
    made = [0] * slots
    got: list[list[np.ndarray]] = [[] for _ in range(slots)]
    chunks: list[list[int]] = [[] for _ in range(slots)]
    for first, b, k in CHUNK_STEPS:
        waves = dec.step(
            np.stack([codes[first + j][:, made[first + j] : made[first + j] + k] for j in range(b)]), first
        )
        for j in range(b):
            got[first + j].append(waves[j])
            chunks[first + j].append(k)
            made[first + j] += k
    for i in range(slots):
        alone, at = mimi.stream_decoder(), 0
        want = []
        for k in chunks[i]:
            want.append(alone.step(codes[i][:, at : at + k]))
            at += k
        np.testing.assert_array_equal(np.concatenate(got[i]), np.concatenate(want), err_msg=f"stream {i}")
    return dec
