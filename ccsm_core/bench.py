"""``ccsm bench``: speed of CSM-1B speech on each backend and weight type (random weights).

Speed does not depend on the weight values, so weights are random blocks of the real shape made
directly in the stored type (no quantization pass): CSM-1B (backbone 16 x 2048, decoder
4 x 1024, 32 codebooks of 2051) and the real Mimi. Each configuration runs in a fresh process so
its peak RSS is its own. Per frame we time the backbone step, the decoder loop (31 steps) and
the streaming Mimi decode of the frame; the real-time factor is compute seconds per second of
audio (a frame is 80 ms).

``llama.cpp`` (when llama-cpp-python is installed) is the yardstick in the same run: for text,
the same GGUF; for speech, CSM-1B's backbone and decoder written as two llama GGUFs of the real
shapes and timed token by token (`run_llama_cpp_speech_one`). ``background_load`` runs busy
processes beside a measurement, as a user's other programs would.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from .errors import UsageError
from .models.config import FLAVORS, CsmConfig
from .tensors import TensorData, f32_to_bf16

FRAME_S = 0.08
# byte offsets of fp16 scales in one block, per type (the rest of a block may be random)
_SCALES = {
    "Q8_0": (0,),
    "Q4_0": (0,),
    "Q4_1": (0, 2),
    "Q5_0": (0,),
    "Q5_1": (0, 2),
    "Q4_K": (0, 2),
    "Q5_K": (0, 2),
    "Q6_K": (208,),
}
TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "q5_0", "q4_k", "q6_k")


def random_tensor(name: str, shape: tuple[int, ...], dtype: str, rng: np.random.Generator) -> TensorData:
    """Random values of ``shape`` stored as ``dtype`` (sane scales, so no NaN or Inf)."""
    n = int(np.prod(shape))
    dtype = dtype.upper()
    if dtype in ("F32", "F16", "BF16"):
        x = (rng.standard_normal(n, dtype=np.float32) * 0.02).reshape(shape)
        data = {"F32": x, "F16": x.astype(np.float16), "BF16": f32_to_bf16(x)}[dtype]
        return TensorData(name, shape, dtype, data)
    import gguf

    block, size = gguf.GGML_QUANT_SIZES[gguf.GGMLQuantizationType[dtype]]
    if shape[-1] % block:
        return random_tensor(name, shape, "F16", rng)
    nblocks = n // block
    raw = rng.integers(0, 256, size=(nblocks, size), dtype=np.uint8)
    scale = np.frombuffer(np.float16(0.001).tobytes(), np.uint8)
    for off in _SCALES[dtype]:
        raw[:, off : off + 2] = scale
    return TensorData(name, shape, dtype, raw.reshape(-1))


def csm_tensors(cfg: CsmConfig, dtype: str, rng: np.random.Generator) -> dict[str, TensorData]:
    from .models.csm import csm_shapes

    shapes = csm_shapes(cfg, split_heads=True)
    return {
        name: random_tensor(name, shape, "F32" if len(shape) == 1 else dtype, rng) for name, shape in shapes.items()
    }


def run_one(backend: str, dtype: str, frames: int, warmup: int, threads: int | None, shape: str) -> dict[str, Any]:
    """Time one (backend, type) in this process."""
    from .backends import get_backend
    from .generator import FrameSampler, GenerationSettings
    from .loading.demo import DEMO_CSM, DEMO_MIMI, random_mimi_tensors
    from .models.csm import CSM
    from .models.mimi import Mimi

    rng = np.random.default_rng(0)
    cfg = CsmConfig(FLAVORS["llama-1B"], FLAVORS["llama-100M"]) if shape == "real" else DEMO_CSM
    opts = {"threads": threads} if threads else {}
    be = get_backend(backend, **opts)
    t0 = time.perf_counter()
    model = CSM(be, cfg, csm_tensors(cfg, dtype, rng))
    mimi_cfg = None if shape == "real" else DEMO_MIMI
    mimi = Mimi.from_tensors(be, random_mimi_tensors(mimi_cfg, 0), mimi_cfg)
    load_s = time.perf_counter() - t0
    # the speech defaults with ids 2048.. banned: the decoder picks codes 1..31 in its graph where it can
    settings = GenerationSettings(temperature=0.9, topk=50, guard_special=True, seed=0)
    sample = FrameSampler(settings, cfg.audio_vocab_size, cfg.audio_num_codebooks)
    bb, dec = model.new_caches()
    stream = mimi.stream_decoder()
    prompt = np.zeros((16, 33), np.int64)
    prompt[:, 32] = rng.integers(0, min(1000, cfg.text_vocab_size), 16)
    mask = np.zeros_like(prompt, bool)
    mask[:, 32] = True
    tokens, positions = prompt, np.arange(16)
    stats = getattr(be, "stats", None)
    rows = []
    for f in range(warmup + frames):
        s0 = stats() if stats else None
        t = [time.perf_counter()]
        if f == 0:
            h, c0 = be.to_numpy(model.backbone_step(tokens, mask, positions, bb)), None
        else:
            h, c0 = model.backbone_row(tokens, mask, bb)
        t.append(time.perf_counter())
        codes = model.frame(h, sample, dec, c0_logits=c0)
        t.append(time.perf_counter())
        stream.step(np.minimum(codes, 2047)[:, None])
        t.append(time.perf_counter())
        s1 = stats() if stats else None
        if f >= warmup:
            row = {"backbone_s": t[1] - t[0], "decoder_s": t[2] - t[1], "mimi_s": t[3] - t[2], "frame_s": t[3] - t[0]}
            if s0 is not None and s1 is not None:
                row["compute_s"] = s1["compute_s"] - s0["compute_s"]
            rows.append(row)
        tokens = np.zeros((1, 33), np.int64)
        tokens[0, :32] = codes
        mask = np.zeros_like(tokens, bool)
        mask[0, :32] = True
        positions = positions[-1:] + 1
    out = _speech_row(rows, backend=backend, type=dtype, shape=shape, threads=threads, frames=frames, load_s=load_s)
    if "compute_s_median" in out:
        out["outside_share"] = max(0.0, 1.0 - out["compute_s_median"] / out["frame_s_median"])
    return out


def _speech_row(rows: list[dict[str, float]], **ident: Any) -> dict[str, Any]:
    """One configuration's result: who it is, each timing's median over ``rows``, the real-time
    factor, frames per second and this process's peak memory."""
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    return {
        **ident,
        **{f"{k}_median": v for k, v in med.items()},
        "rtf": med["frame_s"] / FRAME_S,
        "frames_per_s": 1.0 / med["frame_s"],
        "peak_rss_mb": peak_rss_mb(),
    }


def configurations(
    backends: list[str], types: list[str], threads: list[int | None], progress: Any = None, what: str = ""
) -> Iterator[tuple[str, str, int | None]]:
    """Every (backend, type, thread count), announced through ``progress`` as it starts."""
    for backend in backends:
        for dtype in types:
            for n in threads:
                if progress:
                    progress(f"{what}{backend} {dtype}" + (f", {n} threads" if n else ""))
                yield backend, dtype, n


def peak_rss_mb() -> float:
    """This process's peak resident memory so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_all(
    backends: list[str],
    types: list[str],
    frames: int,
    warmup: int,
    threads: list[int | None],
    shape: str,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Each configuration (backend x type x thread count) in a fresh interpreter; failures are
    reported, not fatal. ``llama.cpp`` among the backends is `run_llama_cpp_speech_one`."""
    results = []
    for backend, dtype, n in configurations(backends, types, threads, progress):
        cmd = [sys.executable, "-m", "ccsm_core.bench", backend, dtype, str(frames), str(warmup), str(n or 0), shape]
        results.append(run_child(cmd, {"backend": backend, "type": dtype, "shape": shape, "threads": n}))
    return results


@contextmanager
def background_load(k: int) -> Iterator[list[subprocess.Popen]]:
    """``k`` busy-loop processes running beside the measurement (a user's other programs),
    stopped afterwards whatever happens."""
    procs = [subprocess.Popen([sys.executable, "-c", "while True: pass"], stdin=subprocess.DEVNULL) for _ in range(k)]
    try:
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def run_text_one(backend: str, model: str, threads: int | None, n_prompt: int, n_gen: int, reps: int) -> dict[str, Any]:
    """Prompt processing and generation speed of a GGUF text model (greedy, fixed tokens)."""
    from .backends import get_backend
    from .loading.text import load_text_model

    be = get_backend(backend, **({"threads": threads} if threads else {}))
    m = load_text_model(model, be).model
    cache = m.new_cache(n_prompt + n_gen + 1)
    speeds = _text_speeds(cache.reset, lambda ids: m.next_logits(ids, cache), m.cfg.vocab_size, n_prompt, n_gen, reps)
    return {
        "backend": backend,
        "model": str(model),
        "threads": threads,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        **speeds,
        "peak_rss_mb": peak_rss_mb(),
    }


LLAMA_CPP = "llama.cpp"  # the reference row of text benchmarks (llama-cpp-python, when installed)


def run_llama_cpp_one(model: str, threads: int | None, n_prompt: int, n_gen: int, reps: int) -> dict[str, Any]:
    """The same measurement through llama.cpp (the `llama_cpp` module of llama-cpp-python),
    for a ratio measured in the same run."""
    try:
        from llama_cpp import Llama, llama_get_logits
    except ImportError:
        raise UsageError("llama.cpp is not installed", "pip install llama-cpp-python; ccsm does not need it") from None
    n = threads or os.cpu_count() or 1
    # flash attention on, as llama.cpp's own tools default to on CPUs (llama-cpp-python defaults off)
    llm = Llama(
        model_path=model,
        n_ctx=n_prompt + n_gen + 1,
        n_batch=max(n_prompt, 1),
        n_threads=n,
        n_threads_batch=n,
        flash_attn=True,
        verbose=False,
    )

    def feed(ids: list[int]) -> np.ndarray:
        llm.eval(ids)
        return np.ctypeslib.as_array(llama_get_logits(llm.ctx), shape=(llm.n_vocab(),))

    speeds = _text_speeds(llm.reset, feed, llm.n_vocab(), n_prompt, n_gen, reps)
    return {
        "backend": LLAMA_CPP,
        "model": str(model),
        "threads": threads,
        "n_prompt": n_prompt,
        "n_gen": n_gen,
        **speeds,
        "peak_rss_mb": peak_rss_mb(),
    }


def _text_speeds(reset: Any, feed: Any, vocab: int, n_prompt: int, n_gen: int, reps: int) -> dict[str, float]:
    """Median prompt and generation tokens/s over ``reps`` runs after a warm-up: ``feed(ids)``
    appends ids (the prompt in one batch, then the greedy token) and returns the last logits."""
    prompt = [int(t) for t in np.random.default_rng(0).integers(10, min(vocab, 30000), n_prompt)]
    pp, tg = [], []
    for _ in range(reps + 1):
        reset()
        t0 = time.perf_counter()
        logits = feed(prompt)
        t1 = time.perf_counter()
        for _ in range(n_gen):
            logits = feed([int(np.argmax(logits))])
        t2 = time.perf_counter()
        pp.append(n_prompt / (t1 - t0))
        tg.append(n_gen / (t2 - t1))
    return {"pp_tok_s": statistics.median(pp[1:]), "tg_tok_s": statistics.median(tg[1:])}


def run_text_all(
    backends: list[str],
    model: str,
    threads: list[int | None],
    n_prompt: int,
    n_gen: int,
    reps: int,
    progress: Any = None,
) -> list[dict[str, Any]]:
    """Each (backend, thread count) in a fresh interpreter; failures are reported, not fatal."""
    results = []
    for backend in backends:
        for n in threads:
            if progress:
                progress(backend + (f", {n} threads" if n else ""))
            cmd = [
                sys.executable,
                "-m",
                "ccsm_core.bench",
                "--text",
                backend,
                model,
                str(n or 0),
                str(n_prompt),
                str(n_gen),
                str(reps),
            ]
            results.append(run_child(cmd, {"backend": backend, "model": model, "threads": n}))
    return results


# llama.cpp's names for a llama stack's tensors, from ours (models.llama.LAYER_TENSORS' keys)
_LLAMA_CPP_NAMES = {
    "q": "attn_q",
    "k": "attn_k",
    "v": "attn_v",
    "o": "attn_output",
    "w1": "ffn_gate",
    "w2": "ffn_down",
    "w3": "ffn_up",
    "sa_norm": "attn_norm",
    "mlp_norm": "ffn_norm",
}


def write_llama_stack(path: Path, cfg: Any, vocab: int, dtype: str, rng: np.random.Generator) -> Path:
    """A llama GGUF of ``cfg``'s shape with random weights in ``dtype`` (norms F32): token
    embeddings and output head of ``vocab`` rows, no tokenizer. What llama.cpp needs to run the
    same matrix products as a CSM backbone or decoder stack."""
    from .formats.gguf_writer import write_gguf
    from .models.llama import LAYER_TENSORS, expected_shapes

    ours = {v: k for k, v in LAYER_TENSORS.items()}
    tensors: dict[str, TensorData] = {}
    for name, shape in expected_shapes(cfg, "s").items():
        parts = name.split(".")
        if parts[1] == "norm":
            out = "output_norm.weight"
        else:
            out = f"blk.{parts[2]}.{_LLAMA_CPP_NAMES[ours['.'.join(parts[3:])]]}.weight"
        tensors[out] = random_tensor(out, shape, "F32" if len(shape) == 1 else dtype, rng)
    for name in ("token_embd.weight", "output.weight"):
        tensors[name] = random_tensor(name, (vocab, cfg.embed_dim), dtype, rng)
    meta = {
        "llama.context_length": cfg.max_seq_len,
        "llama.embedding_length": cfg.embed_dim,
        "llama.block_count": cfg.num_layers,
        "llama.feed_forward_length": cfg.intermediate_dim,
        "llama.attention.head_count": cfg.num_heads,
        "llama.attention.head_count_kv": cfg.num_kv_heads,
        "llama.rope.dimension_count": cfg.head_dim,
        "llama.rope.freq_base": float(cfg.rope_base),
        "llama.attention.layer_norm_rms_epsilon": float(cfg.norm_eps),
        "llama.vocab_size": vocab,
        "tokenizer.ggml.model": "none",
    }
    return write_gguf(path, meta, tensors, "llama")


def run_llama_cpp_speech_one(
    dtype: str, frames: int, warmup: int, threads: int | None, prompt: int = 16
) -> dict[str, Any]:
    """CSM-1B's transformer work per frame through llama.cpp: one backbone token (after a
    ``prompt``-token prefill, at the positions ``run_one`` uses) and 31 decoder tokens, the
    decoder's cache cleared each frame. No embedding sums, sampling or Mimi: the columns
    compare with ggml-cpu's backbone and decoder columns."""
    try:
        import llama_cpp as lc
    except ImportError:
        raise UsageError("llama.cpp is not installed", "pip install llama-cpp-python; ccsm does not need it") from None
    cfg = CsmConfig(FLAVORS["llama-1B"], FLAVORS["llama-100M"])
    n, extra = threads or os.cpu_count() or 1, llama_cpp_extra_bufts(lc)
    rng = np.random.default_rng(0)
    rows, stacks = [], []
    with tempfile.TemporaryDirectory(prefix="ccsm-bench-") as tmp:
        try:
            t0 = time.perf_counter()
            for part, c, n_ctx in (
                ("backbone", cfg.backbone, prompt + warmup + frames + 1),
                ("decoder", cfg.decoder, cfg.audio_num_codebooks),
            ):
                path = write_llama_stack(Path(tmp) / f"{part}.gguf", c, cfg.audio_vocab_size, dtype.upper(), rng)
                stacks.append(LlamaCppContext(lc, path, n, n_ctx, extra))
            load_s = time.perf_counter() - t0
            backbone, decoder = stacks
            backbone.decode(list(range(prompt)), 0)
            for f in range(warmup + frames):
                t = [time.perf_counter()]
                backbone.decode([f % cfg.audio_vocab_size], prompt + f)
                t.append(time.perf_counter())
                decoder.clear()
                for i in range(cfg.audio_num_codebooks - 1):
                    decoder.decode([i], i)
                t.append(time.perf_counter())
                if f >= warmup:
                    rows.append({"backbone_s": t[1] - t[0], "decoder_s": t[2] - t[1], "frame_s": t[2] - t[0]})
        finally:
            for stack in stacks:
                stack.close()
    return _speech_row(
        rows,
        backend=LLAMA_CPP,
        type=dtype,
        shape="real",
        threads=threads,
        frames=frames,
        load_s=load_s,
        extra_bufts=extra,
    )


def llama_cpp_extra_bufts(lc: Any) -> bool:
    """Whether llama.cpp may use its extra CPU buffer types (repacked Q4_0/Q4_K, AMX): not where
    it reports AMX, whose buffer crashes llama-cpp-python 0.3.36's build on decode (measured on
    an Intel Xeon with AMX); its plain CPU kernels are then measured, without repacking."""
    return b"AMX_INT8 = 1" not in lc.llama_print_system_info()


class LlamaCppContext:
    """One model and context of llama.cpp's C API (flash attention on, as its tools default to
    on CPUs) for up to ``n_seq`` sequences, fed token by token (`decode`) or one token of each
    sequence at once (`decode_rows`)."""

    _quiet: Any = None  # llama.cpp's log callback, kept alive

    def __init__(self, lc: Any, path: Path, threads: int, n_ctx: int, extra_bufts: bool, n_seq: int = 1) -> None:
        self.lc = lc
        if LlamaCppContext._quiet is None:
            LlamaCppContext._quiet = lc.llama_log_callback(lambda _level, _text, _user: None)
            lc.llama_log_set(LlamaCppContext._quiet, None)
        lc.llama_backend_init()
        mparams = lc.llama_model_default_params()
        mparams.use_extra_bufts = extra_bufts
        self.model = lc.llama_model_load_from_file(str(path).encode(), mparams)
        if not self.model:
            raise UsageError(f"llama.cpp could not load {path.name}", "update llama-cpp-python")
        cparams = lc.llama_context_default_params()
        cparams.n_ctx, cparams.n_batch, cparams.n_ubatch = max(n_ctx, 32), 512, 512
        cparams.n_seq_max = n_seq
        cparams.n_threads = cparams.n_threads_batch = threads
        cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_ENABLED
        self.ctx = lc.llama_init_from_model(self.model, cparams)
        if not self.ctx:
            lc.llama_model_free(self.model)
            raise UsageError(f"llama.cpp could not make a context for {path.name}", "update llama-cpp-python")

    def decode(self, tokens: list[int], pos: int) -> None:
        lc = self.lc
        batch = lc.llama_batch_init(len(tokens), 0, 1)
        try:
            batch.n_tokens = len(tokens)
            for i, tok in enumerate(tokens):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos + i, 1
                batch.seq_id[i][0] = 0
                batch.logits[i] = i == len(tokens) - 1
            if lc.llama_decode(self.ctx, batch) != 0:
                raise UsageError("llama.cpp failed to decode", "report this as a bug")
            lc.llama_get_logits_ith(self.ctx, -1)
        finally:
            lc.llama_batch_free(batch)

    def decode_rows(self, tokens: list[int], positions: list[int], seqs: list[int]) -> np.ndarray:
        """Token ``tokens[i]`` of sequence ``seqs[i]`` at ``positions[i]``, all in one batch; the
        logits ``[len(tokens), vocab]`` after each."""
        lc, n = self.lc, len(tokens)
        batch = lc.llama_batch_init(n, 0, 1)
        try:
            batch.n_tokens = n
            for i, (tok, pos, seq) in enumerate(zip(tokens, positions, seqs)):
                batch.token[i], batch.pos[i], batch.n_seq_id[i] = tok, pos, 1
                batch.seq_id[i][0] = seq
                batch.logits[i] = True
            if lc.llama_decode(self.ctx, batch) != 0:
                raise UsageError("llama.cpp failed to decode", "report this as a bug")
            vocab = lc.llama_vocab_n_tokens(lc.llama_model_get_vocab(self.model))
            return np.ctypeslib.as_array(lc.llama_get_logits(self.ctx), shape=(n, vocab)).copy()
        finally:
            lc.llama_batch_free(batch)

    def clear(self) -> None:
        self.lc.llama_memory_clear(self.lc.llama_get_memory(self.ctx), True)

    def close(self) -> None:
        self.lc.llama_free(self.ctx)
        self.lc.llama_model_free(self.model)


def run_child(cmd: list[str], ident: dict[str, Any]) -> dict[str, Any]:
    """One configuration measured in a fresh interpreter (``cmd`` prints a JSON line): that
    result, else ``ident`` with the child's last error line as ``error``."""
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        return json.loads(lines[-1])
    return {**ident, "error": (proc.stderr.strip().splitlines() or ["failed"])[-1]}


if __name__ == "__main__":  # one configuration, JSON on stdout (used by run_all / run_text_all)
    from .errors import CcsmError

    try:
        if sys.argv[1] == "--text":
            b, mdl, th, n_p, n_g, r = sys.argv[2:8]
            run = run_text_one if b != LLAMA_CPP else (lambda _b, *a: run_llama_cpp_one(*a))
            print(json.dumps(run(b, mdl, int(th) or None, int(n_p), int(n_g), int(r))))
        else:
            b, ty, n, w, th, sh = sys.argv[1:7]
            if b == LLAMA_CPP:
                if sh != "real":
                    raise UsageError("llama.cpp is measured at the real shape only", "use --shape real")
                print(json.dumps(run_llama_cpp_speech_one(ty, int(n), int(w), int(th) or None)))
            else:
                print(json.dumps(run_one(b, ty, int(n), int(w), int(th) or None, sh)))
    except CcsmError as e:
        print(e.one_line(), file=sys.stderr)
        sys.exit(2)
