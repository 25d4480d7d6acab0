"""``ccsm bench --streams N``: several utterances generated together (`ccsm_core.batching`).

For each stream count ``N`` a fresh interpreter builds CSM-1B with random weights (as
`ccsm_core.bench`), prefills ``N`` short prompts and times batched frame steps: one step makes a
frame for every stream. Reported: seconds per step (each stream's seconds per frame), aggregate
frames per second (``N`` / step), and both relative to one stream in the same run. Mimi decoding
is per stream and not part of a step.
"""

from __future__ import annotations

import statistics
import sys
import time
from typing import Any

import numpy as np

PROMPT_ROWS = 16


def run_streams_one(
    backend: str, dtype: str, streams: int, frames: int, warmup: int, threads: int | None, shape: str
) -> dict[str, Any]:
    """Median seconds per batched frame step for ``streams`` streams, in this process."""
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
    batch = FrameBatch(model, slots=streams)
    total = warmup + frames
    iters = []
    for i in range(streams):
        tokens = np.zeros((PROMPT_ROWS, 33), np.int64)
        tokens[:, 32] = rng.integers(3, min(1000, cfg.text_vocab_size), PROMPT_ROWS)
        mask = np.zeros_like(tokens, bool)
        mask[:, 32] = True
        gen = Generator(model, None)
        s = GenerationSettings(
            max_audio_ms=(total + 1) * 80, min_frames=total + 1, temperature=0.9, topk=50, guard_special=True, seed=i
        )
        iters.append(batch.frames(gen, [(tokens, mask)], FrameSampler(s, cfg.audio_vocab_size, 32), s.max_frames))
    for it in iters:  # admits every stream (prefill) and runs the first step
        next(it)
    steps = []
    for _ in range(total - 1):
        t0 = time.perf_counter()
        for it in iters:
            next(it)
        steps.append(time.perf_counter() - t0)
    step_s = statistics.median(steps[max(0, warmup - 1) :])
    rss = _peak_rss_mb()
    return {
        "backend": backend,
        "type": dtype,
        "shape": shape,
        "threads": threads,
        "streams": streams,
        "frames": frames,
        "step_s_median": step_s,
        "frames_per_s": streams / step_s,
        "batched": batch.batched,
        "peak_rss_mb": rss,
    }


def _peak_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


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
    """Every (backend, type, threads, stream count) in a fresh interpreter, with each figure
    relative to one stream of the same configuration (measured first, in this run)."""
    from .bench import _child

    results = []
    for backend in backends:
        for dtype in types:
            for n in threads:
                base = None
                for count in sorted(set([1, *counts])):
                    if progress:
                        progress(f"{backend} {dtype}, {count} stream(s)" + (f", {n} threads" if n else ""))
                    cmd = [sys.executable, "-m", "ccsm_core.bench_streams", backend, dtype, str(count)]
                    cmd += [str(frames), str(warmup), str(n or 0), shape]
                    ident = {"backend": backend, "type": dtype, "shape": shape, "threads": n, "streams": count}
                    r = _child(cmd, ident)
                    if count == 1:
                        base = r
                    if base is not None and "error" not in r and "error" not in base:
                        r["speedup"] = r["frames_per_s"] / base["frames_per_s"]
                        r["per_stream_vs_one"] = r["step_s_median"] / base["step_s_median"]
                    if count in counts:
                        results.append(r)
    return results


if __name__ == "__main__":  # one configuration, JSON on stdout (used by run_streams_all)
    import json

    from .errors import CcsmError

    try:
        b, ty, cnt, n, w, th, sh = sys.argv[1:8]
        print(json.dumps(run_streams_one(b, ty, int(cnt), int(n), int(w), int(th) or None, sh)))
    except CcsmError as e:
        print(e.one_line(), file=sys.stderr)
        sys.exit(2)
