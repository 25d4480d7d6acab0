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
from ..models import csm_fused
from ..models.csm import CSM
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


@contextmanager
def handed_back() -> Iterator[list[int]]:
    """Collect, per fused frame, the codebook from which the host path took over (32: none)."""
    starts: list[int] = []
    run = csm_fused.run

    def counted(*args: Any) -> int:
        start = run(*args)
        starts.append(start)
        return start

    csm_fused.run = counted  # type: ignore[assignment]
    try:
        yield starts
    finally:
        csm_fused.run = run


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
