"""Signal helpers: input checks, resampling to the working rate, STFT and its inverse."""

from __future__ import annotations

import numpy as np

RATE = 16000  # every method works on a 16 kHz copy; marks live below 8 kHz
N_FFT = 512


def as_audio(audio: object, sample_rate: object) -> tuple[np.ndarray, int]:
    """``audio`` as float64 (n, channels) plus the rate, or a ValueError naming the problem."""
    if isinstance(sample_rate, bool) or not isinstance(sample_rate, (int, np.integer)) or sample_rate < 8000:
        raise ValueError(f"sample rate must be an integer >= 8000 Hz, got {sample_rate!r}")
    x = np.asarray(audio)
    if x.ndim not in (1, 2) or x.size == 0:
        raise ValueError(f"audio must have shape (n,) or (n, channels), got {x.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        raise ValueError(f"audio must be floating point, got {x.dtype}")
    x = x.astype(np.float64)
    if x.ndim == 1:
        x = x[:, None]
    if not np.all(np.isfinite(x)):
        raise ValueError("audio contains NaN or infinite samples")
    return x, int(sample_rate)


def resample(x: np.ndarray, src: int, dst: int) -> np.ndarray:
    """Resample along axis 0 (soxr, high quality)."""
    if src == dst:
        return x
    import soxr

    return np.asarray(soxr.resample(x, src, dst, quality="HQ"), dtype=np.float64)


def stft(x: np.ndarray, hop: int, window: np.ndarray) -> np.ndarray:
    """Frames centred at ``k * hop`` (zero padded), shape (frames, N_FFT // 2 + 1)."""
    pad = N_FFT // 2
    xp = np.pad(x, (pad, pad + hop))
    n_frames = 1 + (len(x) + hop - 1) // hop
    idx = np.arange(N_FFT)[None, :] + hop * np.arange(n_frames)[:, None]
    return np.fft.rfft(xp[idx] * window, axis=1)


def istft(spec: np.ndarray, hop: int, window: np.ndarray, length: int) -> np.ndarray:
    """Weighted overlap-add inverse of `stft` (``window`` used for analysis and synthesis)."""
    pad = N_FFT // 2
    frames = np.fft.irfft(spec, n=N_FFT, axis=1) * window
    out = np.zeros(pad + hop * len(frames) + N_FFT)
    norm = np.zeros_like(out)
    for k, fr in enumerate(frames):
        out[k * hop : k * hop + N_FFT] += fr
        norm[k * hop : k * hop + N_FFT] += window**2
    norm[norm < 1e-8] = 1.0
    return (out / norm)[pad : pad + length]


def sqrt_hann() -> np.ndarray:
    return np.sqrt(np.hanning(N_FFT + 1)[:N_FFT])


def hann() -> np.ndarray:
    return np.hanning(N_FFT + 1)[:N_FFT]
