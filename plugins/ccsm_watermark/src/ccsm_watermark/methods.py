"""The registered methods: keyed spread spectrum and patchwork, both on STFT band levels."""

from __future__ import annotations

import numpy as np

from .engine import PAYLOAD_THRESHOLD, Layout, Method

# detector: residuals minus their moving mean over this many 8-ms frames (136 ms, about two
# slots): sustained notes and slow envelopes cancel, the slot-to-slot chips stay
TIME_DETREND = 17
FIRST_BIN = 16  # 500 Hz (31.25 Hz bins)
BAND_COUNT = 104  # 62.5 Hz bands: 500 Hz - 7 kHz


def _bands(first_bin: int, width: int, count: int) -> tuple[tuple[int, int], ...]:
    return tuple((first_bin + i * width, first_bin + (i + 1) * width) for i in range(count))


def moving_mean(a: np.ndarray, width: int, axis: int) -> np.ndarray:
    """Centred moving average of odd ``width`` along ``axis`` (edges repeated)."""
    a = np.moveaxis(a, axis, 0)
    h = width // 2
    p = np.concatenate([np.repeat(a[:1], h, 0), a, np.repeat(a[-1:], h, 0)], axis=0)
    c = np.concatenate([np.zeros_like(p[:1]), np.cumsum(p, axis=0)], axis=0)
    return np.moveaxis((c[width:] - c[:-width]) / width, 0, axis)


def local_normalise(r: np.ndarray, frames: int = 9, units: int = 3) -> np.ndarray:
    """Divide residuals by their local RMS, so each region weighs by its reliability."""
    v = moving_mean(moving_mean(r * r, frames, 0), units, 1)
    return r / np.sqrt(v + 1e-6)


class SpreadSpectrum(Method):
    """Spread spectrum: every 62.5 Hz band of every 64 ms slot (0.5 - 7 kHz) is raised or
    lowered by ``strength_db`` following a keyed +-1 chip sequence. The change is a gain,
    so it is shaped by the signal's own spectrum (masked by it); the detector whitens band
    log-levels against their frequency neighbours before correlating."""

    name = "ss-stft"

    def __init__(
        self,
        key: bytes,
        strength_db: float = 2.0,
        threshold: float = 1e-6,
        payload_threshold: float = PAYLOAD_THRESHOLD,
    ) -> None:
        self.n_units = BAND_COUNT
        layout = Layout(bands=_bands(FIRST_BIN, 2, BAND_COUNT), slot_frames=4, period=16, sync_fraction=0.2)
        super().__init__(key, layout, strength_db, threshold, payload_threshold)

    def unit_gains_db(self, values: np.ndarray) -> np.ndarray:
        return values

    def features(self, log_energy: np.ndarray) -> list[np.ndarray]:
        r = log_energy - moving_mean(log_energy, 5, 1)  # against the band's neighbours
        # two front-ends: as is (best for speech), and against the band's recent past (music)
        return [local_normalise(r, 17, 5), local_normalise(r - moving_mean(r, TIME_DETREND, 0), 17, 5)]


class Patchwork(Method):
    """Patchwork on band energies: adjacent 62.5 Hz bands (0.5 - 7 kHz) form pairs; in every 64 ms slot one
    band of each pair is raised and the other lowered by ``strength_db / 2`` (which one is
    keyed), so the critical-band energy barely moves. The detector reads the log ratio of
    the two energies."""

    name = "patchwork"
    snr_weighting = False  # the log ratio of two neighbours is hurt less by noise; weighting lost here

    def __init__(
        self,
        key: bytes,
        strength_db: float = 2.6,
        threshold: float = 1e-6,
        payload_threshold: float = PAYLOAD_THRESHOLD,
    ) -> None:
        self.n_units = BAND_COUNT // 2
        layout = Layout(bands=_bands(FIRST_BIN, 2, BAND_COUNT), slot_frames=4, period=16, sync_fraction=0.2)
        super().__init__(key, layout, strength_db, threshold, payload_threshold)

    def unit_gains_db(self, values: np.ndarray) -> np.ndarray:
        out = np.empty((values.shape[0], 2 * values.shape[1]))
        out[:, 0::2] = values / 2
        out[:, 1::2] = -values / 2
        return out

    def features(self, log_energy: np.ndarray) -> list[np.ndarray]:
        r = log_energy[:, 0::2] - log_energy[:, 1::2]
        return [local_normalise(r), local_normalise(r - moving_mean(r, TIME_DETREND, 0))]
