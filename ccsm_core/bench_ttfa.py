"""``ccsm bench --ttfa``: time to first audio, the wait before a conversation's first sound.

Measured through the whole pipeline (`ccsm_core.pipeline.speak`, streaming): prompt prefill,
the first frame (backbone and decoder), its Mimi decode. Random weights of the real shapes (as
`ccsm_core.bench`), a fresh interpreter per configuration, three cases:

- ``none``: a short request with no context;
- ``voice``: the same with a 10-second voice whose rows are computed (a fresh prompt cache);
- ``cached``: the voice's rows already computed (live in the cache from the previous request);
- ``restored``: the voice's rows copied back from the saved prefix after another voice ran.

Every request has new text, so only the voice's rows can be reused.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .errors import BUG_HINT, CcsmError, UsageError

VOICE_FRAMES = 125  # 10 s of audio
VOICE_TEXT = (
    "So this is what I sound like on a normal day, talking about nothing in particular, just long "
    "enough for the model to hear my voice."
)
CASES = ("none", "voice", "cached", "restored")


class _ByteTokenizer:
    """Token ids from UTF-8 bytes: a prompt of realistic length for random weights."""

    bos_id, eos_id = 1, 2

    def __init__(self, vocab: int) -> None:
        self.vocab = vocab

    def encode(self, text: str, add_special: bool = False) -> list[int]:
        words = text.split()  # about one token per word, as Llama-3's tokenizer on English
        return [3 + (sum(w.encode()) % (self.vocab - 3)) for w in words]


def run_ttfa_one(backend: str, dtype: str, threads: int | None, shape: str, reps: int) -> dict[str, Any]:
    """Median seconds to the first audio chunk for each case, in this process."""
    from .backends import get_backend
    from .bench import csm_tensors
    from .generator import GenerationSettings, Generator
    from .loading.demo import DEMO_CSM, DEMO_MIMI, random_mimi_tensors
    from .models.config import FLAVORS, CsmConfig
    from .models.csm import CSM
    from .models.mimi import Mimi
    from .pipeline import Audio, Line, SpeakOptions, speak
    from .speech import Speech
    from .voices import Voice, VoiceTurn, codec_fingerprint

    rng = np.random.default_rng(0)
    cfg = CsmConfig(FLAVORS["llama-1B"], FLAVORS["llama-100M"]) if shape == "real" else DEMO_CSM
    be = get_backend(backend, **({"threads": threads} if threads else {}))
    model = CSM(be, cfg, csm_tensors(cfg, dtype, rng))
    mimi_cfg = None if shape == "real" else DEMO_MIMI
    mimi = Mimi.from_tensors(be, random_mimi_tensors(mimi_cfg, 0), mimi_cfg)
    sp = Speech(Generator(model, _ByteTokenizer(cfg.text_vocab_size), mimi), mimi, Path("bench"), demo=True)
    fp = codec_fingerprint(mimi)

    def voice(name: str, seed: int) -> Voice:
        codes = np.random.default_rng(seed).integers(0, 2048, (cfg.audio_num_codebooks, VOICE_FRAMES))
        return Voice(name, 0, (VoiceTurn(VOICE_TEXT, codes),), fp, "bench", "2026-01-01T00:00:00Z")

    ann, bob = voice("ann", 1), voice("bob", 2)
    settings = GenerationSettings(max_audio_ms=800, seed=0)
    opts = SpeakOptions(stream=True, split=False)
    count = iter(range(10**6))

    def ttfa(v: Voice | None) -> float:
        text = f"Request number {next(count)}: could you tell me how your day went?"
        t0 = time.perf_counter()
        for ev in speak(sp, [Line(text, 0, v)], settings=settings, options=opts):
            if isinstance(ev, Audio):
                return time.perf_counter() - t0
        raise UsageError("no audio was generated", BUG_HINT)

    cache = sp.generator.prompt_cache
    ttfa(None)  # warm-up: graphs captured, buffers made
    ttfa(ann)
    times: dict[str, list[float]] = {c: [] for c in CASES}
    reused = {c: 0 for c in CASES}  # prompt rows not computed, per case (the last request's)
    for _ in range(reps):
        for case in CASES:
            if case == "voice":
                cache.clear()
            elif case == "restored":
                ttfa(bob)  # the live cache moves on to another voice
            times[case].append(ttfa(None if case == "none" else ann))
            reused[case] = cache.last.reused + cache.last.restored
    med = {c: statistics.median(v) for c, v in times.items()}
    return {
        "backend": backend,
        "type": dtype,
        "threads": threads,
        "shape": shape,
        "voice_rows": sum(len(sp.generator.turn_rows(s)[0]) for s in ann.segments()),
        **{f"ttfa_{c}_s": med[c] for c in CASES},
        **{f"reused_rows_{c}": reused[c] for c in CASES},
        "cached_vs_none": med["cached"] / med["none"],
        "restored_vs_none": med["restored"] / med["none"],
    }


def run_ttfa_all(
    backends: list[str], types: list[str], threads: list[int | None], shape: str, reps: int, progress: Any = None
) -> list[dict[str, Any]]:
    """Each configuration in a fresh interpreter; failures are reported, not fatal."""
    from .bench import LLAMA_CPP, configurations, run_child

    results = []
    ours = [b for b in backends if b != LLAMA_CPP]  # llama.cpp runs the stacks only: no time to first audio
    for backend, dtype, n in configurations(ours, types, threads, progress, "time to first audio: "):
        cmd = [sys.executable, "-m", "ccsm_core.bench_ttfa", backend, dtype, str(n or 0), shape, str(reps)]
        results.append(run_child(cmd, {"backend": backend, "type": dtype, "shape": shape, "threads": n}))
    return results


if __name__ == "__main__":  # one configuration, JSON on stdout (used by run_ttfa_all)
    try:
        b, ty, th, sh, r = sys.argv[1:6]
        print(json.dumps(run_ttfa_one(b, ty, int(th) or None, sh, int(r))))
    except CcsmError as e:
        print(e.one_line(), file=sys.stderr)
        sys.exit(2)
