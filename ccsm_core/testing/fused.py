"""Checks that CSM's fused decoder (`ccsm_core.models.csm_fused`) samples exactly as the host path.

`compare_frames` runs the same frames twice on one model, once with a `FrameSampler` (fused
where the backend can) and once through a plain function (the host path), and returns both
runs' codes, generator states and histories, plus the codebook each fused frame handed back to
the host (32: none)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from ..generator import FrameSampler, GenerationSettings
from ..models import csm_fused, decoder_rows
from ..models.csm import CSM
from ..models.csm_batch import BatchCaches, decode_frames
from .models import TINY_CONFIG, tiny_csm_tensors

Run = tuple[np.ndarray, Any, np.ndarray]  # codes, generator state, history


def tie_tensors(seed: int = 3) -> dict[str, np.ndarray]:
    """Tiny CSM weights whose audio heads give ids ``2m`` and ``2m+1`` the same logit: ties at
    the top-k boundary in about half the decoder steps."""
    tensors = dict(tiny_csm_tensors(TINY_CONFIG, seed=seed))
    head = np.array(tensors["audio_head"])
    head[:, :, 1:2048:2] = head[:, :, 0:2047:2]
    tensors["audio_head"] = head
    return tensors


def skew_draws(monkeypatch: Any, codebook: int, stream: int = 0) -> None:
    """From ``codebook`` on, the fused graph sees ``stream``'s draws reversed (as a float32
    near-tie would make it pick otherwise than the host): that stream must hand back there."""
    compute = decoder_rows.fused_compute

    def skewed(model: CSM, cache: Any, starts: list[int], k: int, args: tuple, *rest: Any) -> np.ndarray:
        inv_q = args[2].reshape(-1, len(starts), k).copy()
        inv_q[codebook - 1 :, stream] = inv_q[codebook - 1 :, stream, ::-1]
        return compute(model, cache, starts, k, (*args[:2], inv_q.reshape(-1, k), *args[3:]), *rest)

    monkeypatch.setattr(decoder_rows, "fused_compute", skewed)


@contextmanager
def handed_back() -> Iterator[list[int]]:
    """Collect, per stream of each fused frame (alone or batched), the codebook from which the
    host path took over (32: none)."""
    starts: list[int] = []
    run = csm_fused.run_rows

    def counted(*args: Any) -> np.ndarray:
        got = run(*args)
        starts.extend(int(s) for s in got)
        return got

    csm_fused.run_rows = counted  # type: ignore[assignment]
    try:
        yield starts
    finally:
        csm_fused.run_rows = run


def sample_frames(model: CSM, fused: bool, seed: int, frames: int = 3, **settings: Any) -> Run:
    """Codes ``[frames, 32]`` from random backbone states, the generator's state, the history."""
    cfg = model.cfg
    fs = FrameSampler(GenerationSettings(seed=seed, **settings), cfg.audio_vocab_size, cfg.audio_num_codebooks)
    sample: Callable[[int, np.ndarray], int] = fs if fused else (lambda i, logits: fs(i, logits))
    _, cache = model.new_caches()
    rng = np.random.default_rng(1000 + seed)
    codes = []
    for f in range(frames):
        h = (rng.standard_normal((1, cfg.backbone.embed_dim)) * 3).astype(np.float32)
        c0 = rng.standard_normal(cfg.audio_vocab_size).astype(np.float32)
        fs.frame_no = f
        codes.append(model.frame(h, sample, cache, c0_logits=c0))
    return np.stack(codes), fs.rng.bit_generator.state, fs.history[:, : max(fs.counts)].copy()


def compare_frames(model: CSM, seed: int, frames: int = 3, **settings: Any) -> tuple[Run, Run, list[int]]:
    """(fused run, host run, where each fused frame handed back) for the same seed and settings."""
    with handed_back() as starts:
        fused = sample_frames(model, True, seed, frames, **settings)
    return fused, sample_frames(model, False, seed, frames, **settings), starts


def assert_same(fused: Run, host: Run) -> None:
    """Codes, generator state and history equal, bitwise."""
    np.testing.assert_array_equal(fused[0], host[0])
    assert fused[1] == host[1]
    np.testing.assert_array_equal(fused[2], host[2])


def batch_frames(
    model: CSM, streams: list[dict[str, Any]], fused: bool, frames: int = 3
) -> tuple[np.ndarray, list[Any], list[np.ndarray]]:
    """Codes ``[B, frames, 32]`` of ``B`` streams (``streams[b]``: its `GenerationSettings`
    keywords, seed included) from random backbone states, and each stream's generator state and
    history: decoded together (`decode_frames`, fused where it can) or, ``fused=False``, each
    alone on the host path."""
    cfg = model.cfg
    samplers = [FrameSampler(GenerationSettings(**s), cfg.audio_vocab_size, cfg.audio_num_codebooks) for s in streams]
    b = len(streams)
    rng = np.random.default_rng(len(streams) + 100 * frames)
    caches = BatchCaches(model, b)
    alone = [model.new_caches()[1] for _ in range(b)]
    out = []
    for f in range(frames):
        h = (rng.standard_normal((b, cfg.backbone.embed_dim)) * 3).astype(np.float32)
        c0 = rng.standard_normal((b, cfg.audio_vocab_size)).astype(np.float32)
        for fs in samplers:
            fs.frame_no = f
        if fused:
            out.append(decode_frames(model, caches, h, c0, samplers))  # type: ignore[arg-type]
        else:
            out.append(
                np.stack(
                    [model.frame(h[j : j + 1], on_host(fs), alone[j], c0_logits=c0[j]) for j, fs in enumerate(samplers)]
                )
            )
    states = [fs.rng.bit_generator.state for fs in samplers]
    return np.stack(out, axis=1), states, [fs.history[:, : max(fs.counts)].copy() for fs in samplers]


def on_host(fs: FrameSampler) -> Callable[[int, np.ndarray], int]:
    """``fs`` as a plain function: the host path samples with it."""
    return lambda i, logits: fs(i, logits)


def assert_batch_is_each_alone(model: CSM, streams: list[dict[str, Any]], frames: int = 3) -> list[int]:
    """Streams decoded together give, bitwise, each stream's codes, generator state and history
    alone on the host path; returns where each fused stream frame handed back (32: none)."""
    with handed_back() as starts:
        got = batch_frames(model, streams, True, frames)
    want = batch_frames(model, streams, False, frames)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1] == want[1]
    for a, b in zip(got[2], want[2]):
        np.testing.assert_array_equal(a, b)
    return starts


class CharTokenizer:
    """A text tokenizer for tiny models: one id per character."""

    bos_id, eos_id, vocab_size = 1, 2, 128

    def encode(self, text: str, add_special: bool = True) -> list[int]:
        return [ord(c) % 120 + 3 for c in text]


def assert_frame_batch_is_each_alone(model: CSM, streams: list[dict[str, Any]], slots: int = 3) -> list[int]:
    """`FrameBatch` streams (more than ``slots``, joining and leaving between frames) give
    exactly each stream's frames generated alone; returns where each batched fused stream frame
    handed back (32: none)."""
    from ..batching import FrameBatch
    from ..generator import Generator
    from .conformance import read_in_turns

    def settings(i: int) -> GenerationSettings:
        return GenerationSettings(max_audio_ms=240 + 80 * i, **streams[i])

    def job(i: int) -> tuple[str, int, list[Any]]:
        return f"Line number {i}." * (1 + i % 3), i % 2, []

    alone = [Generator(model, CharTokenizer()).generate(*job(i), settings(i)) for i in range(len(streams))]
    batch = FrameBatch(model, slots=slots)
    readers = []
    with handed_back() as starts:
        for i in range(len(streams)):
            gen, s = Generator(model, CharTokenizer()), settings(i)
            sampler = FrameSampler(s, model.cfg.audio_vocab_size, model.cfg.audio_num_codebooks)
            readers.append(batch.frames(gen, gen.plan(*job(i), s), sampler, s.max_frames))
        got = read_in_turns(readers)
    assert batch.steps < sum(len(f) for f in alone)  # streams did share steps
    for frames, want in zip(got, alone):
        np.testing.assert_array_equal(np.stack(frames), want)
    return starts
