"""Synthetic speech-like test material (no files, no network, no ffmpeg)."""

from __future__ import annotations

import numpy as np
import pytest

pytest_plugins = ["ccsm_core.testing.fixtures"]


def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voiced syllables (gliding harmonics through moving formants), noise bursts and pauses."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    out = np.zeros(n)
    pos = 0
    while pos < n:
        dur = int(rng.uniform(0.12, 0.35) * rate)
        seg = slice(pos, min(n, pos + dur))
        m = seg.stop - seg.start
        env = np.hanning(m) if m > 1 else np.ones(m)
        if rng.random() < 0.75:  # voiced
            f0 = rng.uniform(90, 220) * (1 + 0.1 * np.linspace(-1, 1, m) * rng.uniform(-1, 1))
            phase = 2 * np.pi * np.cumsum(f0) / rate
            formants = rng.uniform([300, 900, 2200], [800, 2000, 3200])
            sig = np.zeros(m)
            for h in range(1, int(min(7000, rate / 2 - 100) / f0.max())):
                f = h * f0.mean()
                amp = (sum(np.exp(-(((f - fc) / 250.0) ** 2)) for fc in formants) + 0.3) / np.sqrt(h)
                sig += amp * np.sin(h * phase + rng.uniform(0, 2 * np.pi))
            sig += np.diff(rng.normal(0, 0.4, m), prepend=0.0)  # aspiration noise
        else:  # fricative
            sig = rng.normal(0, 0.3, m)
            sig = np.diff(sig, prepend=0.0)
        out[seg] = sig * env * rng.uniform(0.3, 1.0)
        pos += dur + int(rng.uniform(0.0, 0.12) * rate)
    out += 1e-4 * rng.normal(size=n)  # room noise
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


@pytest.fixture(scope="session")
def speech24() -> np.ndarray:
    return speechlike(8.0, 24000, seed=1)
