"""``ccsm bench --streams N``: several utterances generated together (`ccsm_core.batching`).

One interpreter per configuration builds CSM-1B with random weights (as `ccsm_core.bench`) and a
batch for each stream count (1 and every ``N``), each with its streams prefilled from short
prompts; then it times batched frame steps round by round, one step of each count per round, so
that a change in the machine's load falls on every count alike. One step makes a frame for every
stream of its batch. Reported per count: seconds per step (each stream's seconds per frame),
aggregate frames per second (``N`` / step), and both relative to one stream. Mimi decoding is
per stream and not part of a step.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import numpy as np

PROMPT_ROWS = 16


def run_streams_one(
    backend: str, dtype: str, counts: list[int], frames: int, warmup: int, threads: int | None, shape: str
) -> list[dict[str, Any]]:
    """Median seconds per batched frame step for each stream count, measured in turns."""
    from .backends import get_backend
    from .batching import FrameBatch
    from .bench import csm_tensors
    from .generator import FrameSampler, GenerationSettings, Generator
    from .loading.demo import DEMO_CSM
    from .models.config import FLAVORS, CsmConfig
    from .models.csm import CSM

    rng = np.random.default_rng(0)
    cfg = CsmConfig(FLAVORS["llama-1B"], FLAVORS["llama-100M"]) if shape == "real" else DEMO_CSM
    be = get_backend(backend, **({"threads": threads} if threads else {}))
    model = CSM(be, cfg, csm_tensors(cfg, dtype, rng))
    gen = Generator(model, None)  # prefills every stream's prompt (then copied into its slot)
    total = warmup + frames
    runs: dict[int, tuple[Any, list[Any]]] = {}
    for count in counts:
        batch = FrameBatch(model, slots=count)
        iters = []
        for i in range(count):
            tokens = np.zeros((PROMPT_ROWS, 33), np.int64)
            tokens[:, 32] = rng.integers(3, min(1000, cfg.text_vocab_size), PROMPT_ROWS)
            mask = np.zeros_like(tokens, bool)
            mask[:, 32] = True
            s = GenerationSettings(
                max_audio_ms=(total + 2) * 80,
                min_frames=total + 2,
                temperature=0.9,
                topk=50,
                guard_special=True,
                seed=i,
            )
            sampler = FrameSampler(s, cfg.audio_vocab_size, 32)
            iters.append(batch.frames(gen, [(tokens, mask)], sampler, s.max_frames))
        for it in iters:  # admits every stream (prefill) and runs the first step
            next(it)
        runs[count] = (batch, iters)
    times: dict[int, list[float]] = {c: [] for c in counts}
    for _ in range(total):
        for count, (_, iters) in runs.items():
            t0 = time.perf_counter()
            for it in iters:
                next(it)
            times[count].append(time.perf_counter() - t0)
    out = []
    for count in counts:
        step_s = statistics.median(times[count][warmup:])
        out.append(
            {
                "backend": backend,
                "type": dtype,
                "shape": shape,
                "threads": threads,
                "streams": count,
                "frames": frames,
                "step_s_median": step_s,
                "frames_per_s": count / step_s,
                "batched": runs[count][0].batched,
            }
        )
    return out


def run_streams_all(
    backends: list[str],
    types: list[str],
    counts: list[int],
    frames: int,
    warmup: int,
    threads: list[int | None],
    shape: str,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Every (backend, type, threads) in a fresh interpreter, each stream count relative to one
    stream measured in the same rounds."""
    from .bench import _child, configurations

    results = []
    wanted = sorted(set([1, *counts]))
    what = f"{', '.join(map(str, wanted))} streams: "
    for backend, dtype, n in configurations(backends, types, threads, progress, what):
        cmd = [sys.executable, "-m", "ccsm_core.bench_streams", backend, dtype, ",".join(map(str, wanted))]
        cmd += [str(frames), str(warmup), str(n or 0), shape]
        got = _child(cmd, {"backend": backend, "type": dtype, "shape": shape, "threads": n})
        if "error" in got:
            results += [{**got, "streams": c} for c in counts]
            continue
        rows = {r["streams"]: r for r in got["rows"]}
        base = rows[1]
        for c in counts:
            r = rows[c]
            r["speedup"] = r["frames_per_s"] / base["frames_per_s"]
            r["per_stream_vs_one"] = r["step_s_median"] / base["step_s_median"]
            r["peak_rss_mb"] = got["peak_rss_mb"]
            results.append(r)
    return results


if __name__ == "__main__":  # one configuration, JSON on stdout (used by run_streams_all)
    import json

    from .bench import peak_rss_mb
    from .errors import CcsmError

    try:
        b, ty, cnts, n, w, th, sh = sys.argv[1:8]
        rows = run_streams_one(b, ty, [int(c) for c in cnts.split(",")], int(n), int(w), int(th) or None, sh)
        print(json.dumps({"rows": rows, "peak_rss_mb": peak_rss_mb()}))
    except CcsmError as e:
        print(e.one_line(), file=sys.stderr)
        sys.exit(2)
