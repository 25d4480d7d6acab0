"""Encoding and decoding long audio with Mimi in blocks, so memory stays bounded by the block,
not the input.

Up to `BLOCK_FRAMES` frames the whole signal is encoded at once (`Mimi.encode`); longer ones go
through the streaming encoder a block at a time, the last partial frame padded with zeros. The
codes of every whole frame are those `Mimi.encode` gives; only a padded last frame may differ
(one-shot encoding pads its last frame by the convolutions' own padding). `decode_blocks`
yields the audio of a block of frames at a time, equal to `Mimi.decode` of all of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

BLOCK_FRAMES = 125  # frames encoded at a time (10 s at 12.5 frames a second)


def encode_blocks(mimi: Any, wave: Any, block_frames: int = BLOCK_FRAMES) -> np.ndarray:
    """24 kHz samples ``[N]`` -> codes ``int64 [num_codebooks, ceil(N / samples_per_frame)]``."""
    a = np.asarray(wave, np.float32).reshape(-1)
    spf = int(mimi.samples_per_frame)
    block = block_frames * spf
    if a.size <= block:
        return np.asarray(mimi.encode(a))
    enc = mimi.stream_encoder()
    parts = []
    for start in range(0, a.size, block):
        piece = a[start : start + block]
        if piece.size % spf:
            piece = np.concatenate([piece, np.zeros(spf - piece.size % spf, np.float32)])
        parts.append(enc.step(piece))
    return np.concatenate(parts, axis=1)


def decode_blocks(mimi: Any, codes: Any, block_frames: int = BLOCK_FRAMES) -> Iterator[np.ndarray]:
    """Codes ``[num_codebooks, T]`` -> 24 kHz audio, ``block_frames`` frames at a time through
    the streaming decoder (the blocks joined equal `Mimi.decode`); memory is bounded by a block."""
    c = np.asarray(codes)
    dec = mimi.stream_decoder()
    for start in range(0, c.shape[-1], block_frames):
        yield dec.step(c[..., start : start + block_frames])
