"""Mimi time per frame per job: each job alone (its own MimiStreamDecoder, as `speak` alone) vs
4 jobs' lanes in one `MimiLanes`, pushed and taken in the pattern `speak` uses inside `speak_many`
(stream mode: a frame pushed, taken the next turn; else 8-frame chunks, taken at a sentence end
every 24 frames). Real Mimi shape, random weights, ggml-cpu.

Usage: python scripts/bench_mimi_lanes.py [THREADS]
"""

import sys
import time

import numpy as np
from ccsm_cpu.backend import GgmlBackend

from ccsm_core.loading.demo import random_mimi_tensors
from ccsm_core.mimi_lanes import MimiLane, MimiLanes
from ccsm_core.models.mimi import Mimi
from ccsm_core.pipeline import DECODE_CHUNK

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
JOBS, FRAMES = 4, 48
be = GgmlBackend(threads=threads)
mimi = Mimi.from_tensors(be, random_mimi_tensors(None, 0), None)
rng = np.random.default_rng(0)
codes = [rng.integers(0, mimi.cardinality, (FRAMES, mimi.num_codebooks)) for _ in range(JOBS)]


def play(lanes, stream):
    """Round robin over the jobs' lanes; returns seconds spent in Mimi (push/take)."""
    opened = [lanes.open() if lanes else MimiLane(mimi) for _ in range(JOBS)]
    spent = 0.0
    for f in range(FRAMES):
        for j, lane in enumerate(opened):
            t = time.perf_counter()
            if stream:  # push a frame; take it the next turn
                lane.push(codes[j][f : f + 1])
            elif (f + 1) % DECODE_CHUNK == 0:
                lane.push(codes[j][f + 1 - DECODE_CHUNK : f + 1])
            spent += time.perf_counter() - t
        for lane in opened:
            if stream or (f + 1) % 24 == 0:  # sentence end every 24 frames in non-stream mode
                t = time.perf_counter()
                lane.take()
                spent += time.perf_counter() - t
    for lane in opened:
        lane.close()
    return spent


for stream in (True, False):
    mk = {"alone": lambda: None, "lanes4": lambda: MimiLanes(mimi, JOBS)}
    lanes = {name: f() for name, f in mk.items()}
    for name in lanes:
        play(lanes[name], stream)  # warm up (graph capture)
    runs: dict = {name: [] for name in lanes}
    for _ in range(3):  # alternated, so both see the same load
        for name in lanes:
            runs[name].append(play(lanes[name], stream) / (JOBS * FRAMES) * 1000)
    a, b = min(runs["alone"]), min(runs["lanes4"])
    mode = "stream (1-frame chunks)" if stream else "non-stream (8-frame chunks)"
    print(
        f"threads={threads} {mode}: alone {a:.2f} ms/frame/job, 4 lanes {b:.2f} ms/frame/job, "
        f"gain {a / b:.2f}x (min of 3; all runs: {runs})",
        flush=True,
    )
