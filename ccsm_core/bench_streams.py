"""``ccsm bench --streams N``: several utterances generated together (`ccsm_core.batching`).

One interpreter per configuration builds CSM-1B with random weights (as `ccsm_core.bench`) and a
batch for each stream count (1 and every ``N``), each with its streams prefilled from short
prompts; then it times batched frame steps round by round, one step of each count per round, so
that a change in the machine's load falls on every count alike. One step makes a frame for every
stream of its batch. Reported per count: seconds per step (each stream's seconds per frame),
aggregate frames per second (``N`` / step), and both relative to one stream. Mimi (real or demo
shape, random weights) decodes each step's frames apart from the step's timing, twice: in one
batched step (`ccsm_core.models.mimi_batch.MimiBatchDecoder`) and stream by stream, each stream
with its own `MimiStreamDecoder` (the figure is the sum over the streams).

Text (`run_text_streams_all`): a GGUF text model decodes ``N`` sequences together
(`ccsm_core.text_batch.TextBatch`, greedy, end-of-generation tokens banned so no sequence ends),
each after its own random prompt; a step is one token of every sequence, sampling included.
``llama.cpp`` among the backends decodes the same way through its C API (one batch of ``N``
tokens, one per sequence, the next tokens picked by argmax), for a ratio in the same run.
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
    from .loading.demo import DEMO_CSM, DEMO_MIMI, random_mimi_tensors
    from .models.config import FLAVORS, CsmConfig
    from .models.csm import CSM
    from .models.mimi import Mimi
    from .models.mimi_batch import MimiBatchDecoder

    rng = np.random.default_rng(0)
    cfg = CsmConfig(FLAVORS["llama-1B"], FLAVORS["llama-100M"]) if shape == "real" else DEMO_CSM
    be = get_backend(backend, **({"threads": threads} if threads else {}))
    model = CSM(be, cfg, csm_tensors(cfg, dtype, rng))
    mimi_cfg = None if shape == "real" else DEMO_MIMI
    mimi = Mimi.from_tensors(be, random_mimi_tensors(mimi_cfg, 0), mimi_cfg)
    gen = Generator(model, None)  # prefills every stream's prompt (then copied into its slot)
    total = warmup + frames
    runs: dict[int, tuple[Any, list[Any]]] = {}
    decoders: dict[int, tuple[Any, list[Any]]] = {}  # Mimi: one batch of `count`, `count` alone
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
        decoders[count] = (MimiBatchDecoder(mimi, count), [mimi.stream_decoder() for _ in range(count)])
        for j in range(count):
            decoders[count][0].reset(j)
    times: dict[int, list[float]] = {c: [] for c in counts}
    mimi_times: dict[int, list[tuple[float, float]]] = {c: [] for c in counts}
    for _ in range(total):
        for count, (_, iters) in runs.items():
            t0 = time.perf_counter()
            codes = np.minimum(np.stack([next(it) for it in iters]), mimi.cardinality - 1)
            t1 = time.perf_counter()
            together, apart = decoders[count]
            together.step(codes[:, :, None])
            t2 = time.perf_counter()
            for dec, frame in zip(apart, codes):
                dec.step(frame[:, None])
            mimi_times[count].append((t2 - t1, time.perf_counter() - t2))
            times[count].append(t1 - t0)
    out = []
    for count in counts:
        step_s = statistics.median(times[count][warmup:])
        mimi_s = mimi_times[count][warmup:]
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
                "mimi_step_s_median": statistics.median(t for t, _ in mimi_s),
                "mimi_one_by_one_s_median": statistics.median(t for _, t in mimi_s),
                "mimi_batched": decoders[count][0].batched,
            }
        )
    return out


def run_text_streams_one(
    backend: str, model: str, counts: list[int], n_prompt: int, n_gen: int, warmup: int, threads: int | None
) -> list[dict[str, Any]]:
    """Median seconds per decode step (one token of every sequence) for each count, in turns."""
    from .bench import LLAMA_CPP

    prompts = [[int(t) for t in np.random.default_rng(i).integers(10, 30000, n_prompt)] for i in range(max(counts))]
    total = warmup + n_gen
    if backend == LLAMA_CPP:
        times = _llama_cpp_text_steps(model, counts, prompts, total, threads)
    else:
        times = _ccsm_text_steps(backend, model, counts, prompts, total, threads)
    out = []
    for count in counts:
        step_s = statistics.median(times[count][warmup:])
        out.append(
            {
                "backend": backend,
                "model": model,
                "threads": threads,
                "streams": count,
                "tokens": n_gen,
                "step_s_median": step_s,
                "tokens_per_s": count / step_s,
            }
        )
    return out


def _ccsm_text_steps(
    backend: str, model: str, counts: list[int], prompts: list[list[int]], total: int, threads: int | None
) -> dict[int, list[float]]:
    from .backends import get_backend
    from .loading.text import load_text_model
    from .text_batch import TextBatch
    from .textgen import PROMPT_CHUNK, TextSettings

    be = get_backend(backend, **({"threads": threads} if threads else {}))
    loaded = load_text_model(model, be)
    tok = loaded.tokenizer
    ends = set(getattr(tok, "eog_ids", ()) or ()) | ({tok.eos_id} - {None})
    batches = {}
    for count in counts:
        joining = count * -(-len(prompts[0]) // PROMPT_CHUNK) + 1  # steps that may run while the prompts join
        bias = {i: -np.inf for i in ends}
        settings = TextSettings(max_tokens=total + joining + 2, temperature=0.0, logit_bias=bias)
        tb = TextBatch(loaded, slots=count, context=len(prompts[0]) + total + joining + 4)
        batches[count] = (tb, [tb.stream(prompts[i], settings) for i in range(count)])
        while tb.waiting:  # every sequence joins (its prompt a chunk a step while others decode)
            tb.step()
    times: dict[int, list[float]] = {c: [] for c in counts}
    for _ in range(total):
        for count, (tb, _) in batches.items():
            t0 = time.perf_counter()
            tb.step()
            times[count].append(time.perf_counter() - t0)
    return times


def _llama_cpp_text_steps(
    model: str, counts: list[int], prompts: list[list[int]], total: int, threads: int | None
) -> dict[int, list[float]]:
    import os
    from pathlib import Path

    from .bench import LlamaCppContext, llama_cpp_extra_bufts
    from .errors import UsageError

    try:
        import llama_cpp as lc
    except ImportError:
        raise UsageError("llama.cpp is not installed", "pip install llama-cpp-python; ccsm does not need it") from None
    n, extra = threads or os.cpu_count() or 1, llama_cpp_extra_bufts(lc)
    n_prompt = len(prompts[0])
    runs: dict[int, Any] = {}
    state: dict[int, tuple[list[int], int]] = {}
    try:
        for count in counts:
            ctx = LlamaCppContext(lc, Path(model), n, count * (n_prompt + total + 4), extra, n_seq=count)
            runs[count] = ctx
            last = [
                int(np.argmax(ctx.decode_rows(prompts[j], list(range(n_prompt)), [j] * n_prompt)[-1]))
                for j in range(count)
            ]
            state[count] = (last, n_prompt)
        times: dict[int, list[float]] = {c: [] for c in counts}
        for _ in range(total):
            for count, ctx in runs.items():
                toks, pos = state[count]
                t0 = time.perf_counter()
                logits = ctx.decode_rows(toks, [pos] * count, list(range(count)))
                toks = [int(i) for i in np.argmax(logits, axis=1)]
                times[count].append(time.perf_counter() - t0)
                state[count] = (toks, pos + 1)
    finally:
        for ctx in runs.values():
            ctx.close()
    return times


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
    from .bench import configurations, run_child

    results = []
    wanted = sorted(set([1, *counts]))
    what = f"{', '.join(map(str, wanted))} streams: "
    for backend, dtype, n in configurations(backends, types, threads, progress, what):
        cmd = [sys.executable, "-m", "ccsm_core.bench_streams", backend, dtype, ",".join(map(str, wanted))]
        cmd += [str(frames), str(warmup), str(n or 0), shape]
        got = run_child(cmd, {"backend": backend, "type": dtype, "shape": shape, "threads": n})
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


def run_text_streams_all(
    backends: list[str],
    model: str,
    counts: list[int],
    n_prompt: int,
    n_gen: int,
    warmup: int,
    threads: list[int | None],
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Every (backend, threads) in a fresh interpreter; each count relative to one sequence
    measured in the same rounds, and to llama.cpp's figure at the same count when it ran."""
    from .bench import LLAMA_CPP, run_child

    results = []
    wanted = sorted(set([1, *counts]))
    for backend in backends:
        for n in threads:
            if progress:
                progress(f"{backend}{f', {n} threads' if n else ''}: {', '.join(map(str, wanted))} sequences")
            cmd = [sys.executable, "-m", "ccsm_core.bench_streams", "--text", backend, model]
            cmd += [",".join(map(str, wanted)), str(n_prompt), str(n_gen), str(warmup), str(n or 0)]
            got = run_child(cmd, {"backend": backend, "model": model, "threads": n})
            if "error" in got:
                results += [{**got, "streams": c} for c in counts]
                continue
            rows = {r["streams"]: r for r in got["rows"]}
            for c in counts:
                r = rows[c]
                r["speedup"] = r["tokens_per_s"] / rows[1]["tokens_per_s"]
                r["peak_rss_mb"] = got["peak_rss_mb"]
                results.append(r)
    ref = {(r["threads"], r["streams"]): r for r in results if r["backend"] == LLAMA_CPP and "error" not in r}
    for r in results:
        other = ref.get((r["threads"], r["streams"]))
        if other is not None and "error" not in r and r["backend"] != LLAMA_CPP:
            r["vs_llama_cpp"] = r["tokens_per_s"] / other["tokens_per_s"]
    return results


if __name__ == "__main__":  # one configuration, JSON on stdout (used by run_streams_all)
    import json

    from .bench import peak_rss_mb
    from .errors import CcsmError

    try:
        if sys.argv[1] == "--text":
            b, mdl, cnts, n_p, n_g, w, th = sys.argv[2:9]
            counts = [int(c) for c in cnts.split(",")]
            rows = run_text_streams_one(b, mdl, counts, int(n_p), int(n_g), int(w), int(th) or None)
        else:
            b, ty, cnts, n, w, th, sh = sys.argv[1:8]
            rows = run_streams_one(b, ty, [int(c) for c in cnts.split(",")], int(n), int(w), int(th) or None, sh)
        print(json.dumps({"rows": rows, "peak_rss_mb": peak_rss_mb()}))
    except CcsmError as e:
        print(e.one_line(), file=sys.stderr)
        sys.exit(2)
