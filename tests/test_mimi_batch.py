"""MimiBatchDecoder on NumPy: each stream's audio equals its own stream decoder's, bitwise, with
streams joining and leaving between frames; the stream-by-stream fallback; bad input."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.errors import UsageError
from ccsm_core.models.mimi_batch import MimiBatchDecoder
from ccsm_core.testing.mimi_batch import (
    SCHEDULE,
    SMALL_RING,
    check_batch_is_each_stream_alone,
    check_chunks_from_any_slot,
    small_mimi,
)


@pytest.fixture(scope="module")
def mimi():
    return small_mimi(NumpyBackend())


def test_batch_is_each_stream_alone(mimi):
    sizes = check_batch_is_each_stream_alone(mimi.be, slots=4, mimi=mimi)
    assert MimiBatchDecoder(mimi, 4).batched
    assert max(sizes) == 4 and min(sizes) == 1 and len(set(sizes)) == 4  # B went through 1..4
    assert len(sizes) < sum(n for _, n in SCHEDULE)  # frames did share steps


def test_chunks_of_frames_from_any_first_slot(mimi):
    """Steps of up to 8 frames a stream (the pipeline's chunks) over any run of slots."""
    assert check_chunks_from_any_slot(mimi.be, mimi).max_frames == 8


def test_save_and_restore_put_a_stream_back(mimi):
    dec = MimiBatchDecoder(mimi, 2)
    dec.reset(0)
    rng = np.random.default_rng(1)
    dec.step(rng.integers(0, 2048, (1, 32, 3)))
    saved = dec.save(0)
    nxt = rng.integers(0, 2048, (1, 32, 2))
    want = dec.step(nxt)
    dec.step(rng.integers(0, 2048, (1, 32, 5)))  # a part that is then dropped
    dec.restore(1, saved)  # into another slot
    np.testing.assert_array_equal(dec.step(nxt, first=1), want)


def test_one_slot_is_stream_by_stream(mimi):
    assert check_batch_is_each_stream_alone(mimi.be, slots=1, mimi=mimi) == [1] * sum(n for _, n in SCHEDULE)


def test_replicate_padding_decodes_stream_by_stream():
    """A SEANet that pads a stream's start by replication is not batched (a fresh stream's first
    frame differs): one stream decoder per slot, still exact."""
    cfg = copy.deepcopy(SMALL_RING)
    cfg["seanet"]["pad_mode"] = "replicate"
    mimi = small_mimi(NumpyBackend(), config=cfg)
    assert not MimiBatchDecoder(mimi, 3).batched
    check_batch_is_each_stream_alone(mimi.be, slots=3, mimi=mimi)


def test_bad_input(mimi):
    with pytest.raises(UsageError, match="positive integer"):
        MimiBatchDecoder(mimi, 0)
    dec = MimiBatchDecoder(mimi, 2)
    with pytest.raises(UsageError, match="slot 2"):
        dec.reset(2)
    with pytest.raises(UsageError, match=r"codes \[B, 32, k\]"):
        dec.step(np.zeros((3, 32, 1), np.int64))
    with pytest.raises(UsageError, match=r"k in 1..8"):
        dec.step(np.zeros((1, 32, 9), np.int64))
    with pytest.raises(UsageError, match="slot 2"):
        dec.step(np.zeros((2, 32, 1), np.int64), first=1)
    with pytest.raises(UsageError, match="out of range"):
        dec.step(np.full((1, 32, 1), 5000))
