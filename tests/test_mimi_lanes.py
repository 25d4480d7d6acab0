"""MimiLanes on NumPy: lanes pushing, taking, undoing and leaving at different turns each get
their own stream decoder's audio, bitwise, in batched steps; lanes beyond the slots decode alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.mimi_lanes import MimiLanes
from ccsm_core.testing.mimi_batch import SMALL_RING, small_mimi
from ccsm_core.testing.mimi_lanes import SCRIPT, check_lanes_are_each_stream_alone


@pytest.fixture(scope="module")
def mimi():
    return small_mimi(NumpyBackend())


def test_lanes_are_each_stream_alone(mimi):
    sizes = check_lanes_are_each_stream_alone(mimi.be, slots=4, mimi=mimi)
    assert max(sizes) >= 3 and len(sizes) < sum(sizes)  # chunks of several lanes shared steps
    pushed = sum(1 for s in SCRIPT[:4] for a in s if isinstance(a, tuple))  # the fifth lane is alone
    assert sum(sizes) <= pushed


def test_one_slot_and_no_batching_decode_alone(mimi):
    assert len(check_lanes_are_each_stream_alone(mimi.be, slots=1, mimi=mimi)) > 0
    cfg = copy.deepcopy(SMALL_RING)
    cfg["seanet"]["pad_mode"] = "replicate"  # cannot batch: every lane has its own decoder
    rep = small_mimi(NumpyBackend(), config=cfg)
    assert check_lanes_are_each_stream_alone(rep.be, slots=3, mimi=rep) == []


def test_a_closed_lane_frees_its_slot(mimi):
    lanes = MimiLanes(mimi, 2)
    a, b = lanes.open(), lanes.open()
    c = lanes.open()
    assert (a.slot, b.slot, c.slot) == (0, 1, None)  # beyond the slots: alone
    a.close()
    assert b.slot == 0 and lanes.open().slot == 1
    a.close()  # twice is fine
    b.push(np.zeros((2, mimi.num_codebooks), np.int64))
    b.close()
    assert b.take().size == 0  # a closed lane's queue was dropped
