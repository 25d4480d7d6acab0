"""A check any backend can run: jobs' Mimi lanes (`MimiLanes`) pushing chunks of different
lengths, taking at different turns, dropping tentative chunks and leaving, give each lane
bitwise the audio of its own `MimiStreamDecoder` stepped with the chunks it kept."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..mimi_lanes import MimiLane, MimiLanes
from .mimi_batch import small_mimi

# per lane, one action a turn: ("push", k) queue k frames, "take", "tentative", "undo", "close"
SCRIPT: list[list[Any]] = [
    [("push", 1), "take", ("push", 1), "take", ("push", 4), "take", ("push", 1), "take", "close"],
    [("push", 1), "take", ("push", 1), "take", ("push", 1), ("push", 1), "take", ("push", 8), "take"],
    ["tentative", ("push", 8), ("push", 8), ("push", 3), "undo", "tentative", ("push", 8), ("push", 2), "take"],
    [("push", 8), ("push", 8), ("push", 1), "take", "tentative", ("push", 1), ("push", 8), "take", "close"],
    [("push", 4), "take", ("push", 8), "take", "tentative", ("push", 8), "undo", ("push", 1), "take"],
]


def run_script(lanes: MimiLanes | None, mimi: Any, script: list[list[Any]], seed: int = 5) -> list[np.ndarray]:
    """Play ``script`` a turn at a time, lane after lane (each lane from `lanes`, or alone when
    None); returns each lane's audio, its takes concatenated."""
    rng = np.random.default_rng(seed)
    opened = [lanes.open() if lanes is not None else MimiLane(mimi) for _ in script]
    audio: list[list[np.ndarray]] = [[] for _ in script]
    for turn in range(max(len(s) for s in script)):
        for i, (lane, steps) in enumerate(zip(opened, script)):
            if turn >= len(steps):
                continue
            act = steps[turn]
            if isinstance(act, tuple):
                lane.push(rng.integers(0, mimi.cardinality, (act[1], mimi.num_codebooks)))
            elif act == "take":
                audio[i].append(lane.take())
            else:
                getattr(lane, act)()
    for lane in opened:
        lane.close()
    return [np.concatenate([np.zeros(0, np.float32), *a]) for a in audio]


def check_lanes_are_each_stream_alone(be: Any, slots: int = 4, mimi: Any = None) -> list[int]:
    """Assert every lane's audio through shared `MimiLanes` equals its own decoder's (bitwise);
    returns the batch sizes stepped."""
    mimi = mimi or small_mimi(be)
    lanes = MimiLanes(mimi, slots)
    got = run_script(lanes, mimi, SCRIPT)
    want = run_script(None, mimi, SCRIPT)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.float32 and g.shape == w.shape, i
        np.testing.assert_array_equal(g, w, err_msg=f"lane {i}")
    assert not lanes._lanes  # every lane left
    return list(lanes.sizes)
