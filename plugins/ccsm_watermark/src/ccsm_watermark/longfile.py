"""Detection in a file of any length: short files whole, long ones in windows read block by block.

A file longer than ``LONG_S`` is read in windows of ``WINDOW_S`` seconds (soundfile blocks, so
memory stays bounded) and each window is searched on its own; the reported p-value is the best
window's times the number of windows (and of methods tried): a union bound like every other.
"""

from __future__ import annotations

from typing import Any

WINDOW_S = 30.0
LONG_S = 60.0


def _windows(path: str) -> tuple[Any, int]:
    """(an iterator of (samples, rate) windows, how many); whole files through `cli.read_audio`."""
    import soundfile as sf

    from .cli import read_audio

    try:
        info = sf.info(path)
    except (sf.LibsndfileError, RuntimeError, TypeError):
        info = None
    if info is None or info.frames <= LONG_S * info.samplerate:
        audio, rate, _ = read_audio(path)
        return iter([(audio, rate)]), 1
    size = int(WINDOW_S * info.samplerate)
    count = -(-info.frames // size)
    blocks = sf.blocks(path, blocksize=size, dtype="float32", always_2d=True)
    return ((b, int(info.samplerate)) for b in blocks), count


def detect_file(path: str, key: bytes, names: list[str], threshold: float, payload_threshold: float) -> dict:
    """The JSON answer of ``ccsm watermark detect`` for one file."""
    from . import create

    detectors = {n: create(n, key, threshold=threshold, payload_threshold=payload_threshold) for n in names}
    windows, count = _windows(path)
    best: tuple[Any, str, float] | None = None
    for i, (audio, rate) in enumerate(windows):
        for name, d in detectors.items():
            r = d.detect(audio, rate)
            if best is None or (r.present is not None, -r.p_value) > (best[0].present is not None, -best[0].p_value):
                best = (r, name, i * WINDOW_S if count > 1 else 0.0)
    assert best is not None
    r, name, start = best
    p = min(1.0, r.p_value * len(names) * count)  # union bound over the methods and windows tried
    present = None if r.present is None else p < threshold
    out = r.as_json()
    out.update(present=present, p_value=p, method=name, file=path)
    if count > 1:
        out.update(windows=count, window_start_s=start)
    if not present:
        out["payload"] = None
    return out
