"""Synthetic test material: music, speech-like sound and noise (for the tests and the benchmark).

Everything is generated from a seed with numpy: no files, no network. ``music`` has chords,
a melody, a bass line, kick, snare and hi-hats, and a short room reverb; ``speechlike`` has
voiced syllables through moving formants, fricatives and pauses; ``noise`` is a rain- or
crowd-like texture. ``mix`` lays one clip under another at a given level difference.
"""

from __future__ import annotations

import numpy as np

KINDS = ("music", "speech", "speech+music", "noise")


def _fft_convolve(x: np.ndarray, h: np.ndarray) -> np.ndarray:
    n = len(x) + len(h) - 1
    size = 1 << (n - 1).bit_length()
    return np.fft.irfft(np.fft.rfft(x, size) * np.fft.rfft(h, size), size)[: len(x)]


def reverb(x: np.ndarray, rate: int, rt60: float, wet: float, rng: np.random.Generator) -> np.ndarray:
    """A room: early reflections and an exponentially decaying noise tail (RT60 in seconds)."""
    n = int(rt60 * rate)
    t = np.arange(n) / rate
    h = rng.normal(0, 1, n) * np.exp(-6.9 * t / rt60)
    h[: int(0.005 * rate)] = 0.0
    for d, g in ((0.011, 0.5), (0.017, 0.4), (0.023, 0.3)):
        h[int(d * rate)] += g * np.sqrt(np.sum(h**2)) / 4
    h /= np.sqrt(np.sum(h**2))
    return (1 - wet) * x + wet * _fft_convolve(x, h)


def _note(f0: float, dur: int, rate: int, harmonics: int, decay: float, bright: float, vib: float = 0.0) -> np.ndarray:
    t = np.arange(dur) / rate
    phase = 2 * np.pi * f0 * (t + vib * np.sin(2 * np.pi * 5.5 * t) / (2 * np.pi * 5.5))
    y = np.zeros(dur)
    for h in range(1, harmonics + 1):
        if f0 * h > rate / 2 - 500:
            break
        y += np.sin(h * phase) * h**-bright
    attack = np.minimum(1.0, t / 0.01)
    return y * attack * np.exp(-t * decay)


def _add(y: np.ndarray, start: int, sig: np.ndarray) -> None:
    m = max(0, min(len(sig), len(y) - start))
    y[start : start + m] += sig[:m]


def music(seconds: float, rate: int, seed: int = 0, style: str = "pop") -> np.ndarray:
    """Music: a chord progression (pads), a melody, a bass line, drums and reverb, peak -1 dBFS.

    ``style``: "pop" (bright, drums), "piano" (decaying notes, no drums), "synth" (sustained,
    sparse harmonics)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    y = np.zeros(n + 4 * rate)
    bpm = rng.uniform(85, 130)
    beat = int(60 / bpm * rate)
    key = 110.0 * 2 ** (rng.integers(0, 12) / 12)
    progression = [(0, 4, 7), (7, 11, 14), (9, 12, 16), (5, 9, 12)]  # I V vi IV
    scale = [0, 2, 4, 5, 7, 9, 11, 12, 14, 16]
    n_bars = n // (4 * beat) + 1
    for bar in range(n_bars):
        chord = progression[bar % 4]
        start = bar * 4 * beat
        dur = 4 * beat
        for semis in chord:  # chord pad (or piano chord)
            f = key * 2 * 2 ** (semis / 12) * (1 + rng.normal(0, 0.002))
            if style == "piano":
                for b in (0, 2):
                    s = start + b * beat
                    _add(y, s, 0.10 * _note(f, 2 * beat, rate, 12, 2.5, 1.3))
            else:
                env = np.minimum(1.0, np.arange(dur) / (0.08 * rate)) * np.minimum(
                    1.0, (dur - np.arange(dur)) / (0.1 * rate)
                )
                harm = 6 if style == "synth" else 10
                _add(y, start, 0.06 * _note(f, dur, rate, harm, 0.2, 1.0) * env)
        root = key / 2 * 2 ** (chord[0] / 12)  # bass on every beat
        for b in range(4):
            s = start + b * beat
            _add(y, s, 0.25 * _note(root, beat, rate, 4, 4.0, 1.5))
        pos = start  # melody: eighths and quarters from the scale
        while pos < start + dur:
            length = beat // 2 * int(rng.choice([1, 2, 2, 3]))
            if rng.random() < 0.85:
                f = key * 4 * 2 ** (scale[rng.integers(0, len(scale))] / 12)
                _add(y, pos, 0.12 * _note(f, length, rate, 8, 3.0, 1.2, vib=0.004))
            pos += length
        if style == "pop":  # drums: kick on 1 and 3, snare on 2 and 4, hi-hats on eighths
            for b in range(4):
                s = start + b * beat
                m = min(int(0.25 * rate), len(y) - s)
                t = np.arange(m) / rate
                if b % 2 == 0:
                    y[s : s + m] += 0.5 * np.sin(2 * np.pi * (50 + 80 * np.exp(-t * 30)) * t) * np.exp(-t * 12)
                else:
                    y[s : s + m] += (0.25 * rng.normal(0, 1, m) + 0.2 * np.sin(2 * np.pi * 190 * t)) * np.exp(-t * 18)
            for e in range(8):
                s = start + e * beat // 2
                m = min(int(0.06 * rate), len(y) - s)
                hat = np.diff(rng.normal(0, 1, m + 1))  # high-passed noise
                y[s : s + m] += 0.05 * hat * np.exp(-np.arange(m) / rate * 60)
    y = reverb(y[:n], rate, rt60=rng.uniform(0.4, 0.9), wet=0.25, rng=rng)
    return _peak(y)


def speechlike(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Voiced syllables (gliding harmonics through moving formants), fricatives and pauses."""
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
            sig = np.diff(rng.normal(0, 0.3, m), prepend=0.0)
        out[seg] = sig * env * rng.uniform(0.3, 1.0)
        pos += dur + int(rng.uniform(0.0, 0.12) * rate)
    out += 1e-4 * rng.normal(size=n)  # room noise
    return (0.5 * out / np.abs(out).max()).astype(np.float32)


def noise(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """A noise texture: pink-ish noise with a slow swell and random drops (rain, a crowd)."""
    rng = np.random.default_rng(seed)
    n = int(seconds * rate)
    spec = np.fft.rfft(rng.normal(0, 1, n))
    f = np.fft.rfftfreq(n, 1 / rate)
    spec /= np.sqrt(np.maximum(f, 20.0))
    y = np.fft.irfft(spec, n)
    t = np.arange(n) / rate
    y *= 1 + 0.5 * np.sin(2 * np.pi * rng.uniform(0.1, 0.3) * t)
    drops = np.zeros(n)
    idx = rng.integers(0, n - rate // 50, int(seconds * 30))
    drops[idx] = rng.uniform(-1, 1, len(idx))
    click = np.exp(-np.arange(rate // 50) / (rate * 0.002)) * np.sin(2 * np.pi * 3000 * np.arange(rate // 50) / rate)
    y = y / np.std(y) + 3 * _fft_convolve(drops, click)
    return _peak(y)


def mix(foreground: np.ndarray, background: np.ndarray, below_db: float) -> np.ndarray:
    """``background`` ``below_db`` dB (RMS) under ``foreground``, peak -1 dBFS."""
    n = min(len(foreground), len(background))
    f, b = foreground[:n].astype(np.float64), background[:n].astype(np.float64)
    gain = np.sqrt(np.mean(f**2) / max(np.mean(b**2), 1e-20)) * 10 ** (-below_db / 20)
    return _peak(f + gain * b)


def clip(kind: str, seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """One clip of ``kind`` (see `KINDS`); speech here is `speechlike`."""
    if kind == "music":
        return music(seconds, rate, seed, ("pop", "piano", "synth")[seed % 3])
    if kind == "speech":
        return speechlike(seconds, rate, seed)
    if kind == "speech+music":
        return mix(speechlike(seconds, rate, seed), music(seconds, rate, seed + 1000, "pop"), 12.0)
    if kind == "noise":
        return noise(seconds, rate, seed)
    raise ValueError(f"unknown kind {kind!r}; one of {', '.join(KINDS)}")


def _peak(y: np.ndarray) -> np.ndarray:
    return (y / (np.abs(y).max() + 1e-12) * 10 ** (-1 / 20)).astype(np.float32)
