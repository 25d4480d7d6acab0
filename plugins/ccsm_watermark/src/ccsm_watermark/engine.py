"""The machinery shared by every method: keyed layout, embedding, synchronised detection.

A method splits the 16 kHz STFT into *cells*: a time slot of ``slot_frames`` hops (16 ms
each) times one *unit* (a frequency band, or a pair of bands). The key draws, for one
block of ``period`` slots, a random sign (chip) per cell and gives each cell a role: part of
the synchronisation pattern, or a carrier of one of the 150 code bits of the payload. The
block repeats for the whole signal, so any excerpt of a marked signal holds the pattern.

Embedding changes the level of every cell by ``chip * strength`` dB (times the code bit's
sign for data cells): a multiplicative change, so the mark follows the signal's own
spectrum and is masked by it. The strength is *informed*: it is set per group of cells (the
sync pattern, each code bit) from what the detector would read on the host, so the host's
own spectrum does not flip bits. Detection computes one residual per frame and unit (the
method's ``features``), folds the frames onto the block for every candidate time scale and
offset, and correlates with the sync chips. With chips that are independent random signs,
``S = sum(chip * R)`` obeys Hoeffding's bound ``P(S >= z * sqrt(sum R^2)) <= exp(-z^2 / 2)``
whatever the audio; a union bound over all hypotheses tried (scales x offsets, and the
2^32 payloads for the payload-aided statistic), weighted by masses fixed in advance that sum
to 1 (more on the nominal time scale 1.0), turns the best ``z`` into a p-value that is an
upper bound on the false-positive probability.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from . import dsp, ecc
from .result import WatermarkResult

HOP = 256  # embedding hop at 16 kHz (16 ms)
DET_HOP = 128  # detection hop (8 ms)
SUB = 4  # offset resolution: a quarter of a slot
MIN_ACTIVE_S = 1.0  # less audible signal than this: cannot tell
SILENCE_DBFS = -60.0  # frames quieter than this (and 50 dB below the loudest) are silence
DEFAULT_THRESHOLD = 1e-6
SCALES = (0.93, 1.075)  # time-scale range searched (covers tempo 0.93 .. 1.075)
TOP_HYPOTHESES = 16  # sync hypotheses whose payload is decoded (the p-value counts them all anyway)
OFFSETS_PER_SCALE = 2
NOMINAL_WEIGHT = 0.5  # prior mass of the union bound on time scale 1.0 (most audio is not re-timed)
SYNC_WEIGHT = 0.1  # ... on the sync-only statistic (the payload-aided one gets the rest)
INFORMED = 2  # refinement passes of the informed embedding (0: plain spread spectrum)
MAX_BOOST = 2.0  # a group's strength stays within [0.25, MAX_BOOST] x the nominal one
WEIGHT_PCT = 10.0  # detector: noise floor per band = this percentile of its smoothed energy
WEIGHT_SMOOTH = 33  # frames of smoothing (264 ms, several slots, so the mark averages out)
ADAPT_REF = 5.4  # embedding: detector score per sqrt(audible second) below which strength rises
ADAPT_MAX = 1.2  # ... by at most this factor
SHAPE_GAMMA = 0.5  # embedding: strength follows (frame level / mean level) ** SHAPE_GAMMA
SHAPE_MAX = 3.0  # ... within [0.2, SHAPE_MAX] x the nominal strength


@dataclass(frozen=True)
class Layout:
    """Where the cells of one method are."""

    bands: tuple[tuple[int, int], ...]  # FFT bin ranges [lo, hi) at 16 kHz / 512
    slot_frames: int  # embedding hops per slot
    period: int  # slots per block
    sync_fraction: float

    @property
    def slot_s(self) -> float:
        return self.slot_frames * HOP / dsp.RATE


class Method:
    """A watermark method: a layout, how cells map to band gains, and the detector features."""

    name = "base"
    n_units: int
    snr_weighting = True  # detector weights cells by their estimated signal share (see _snr_weights)
    adaptive_strength = True  # embedding raises the strength on hosts that hide the mark poorly

    def __init__(self, key: bytes, layout: Layout, strength_db: float, threshold: float = DEFAULT_THRESHOLD) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < 1:
            raise ValueError("key must be non-empty bytes")
        if not 0 < float(strength_db) <= 6:
            raise ValueError(f"strength_db must be in (0, 6], got {strength_db!r}")
        if not 0 < float(threshold) < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        self.key, self.layout = bytes(key), layout
        self.strength_db, self.threshold = float(strength_db), float(threshold)
        self.chips, self.roles = self._pattern()

    # -- to be provided by methods -------------------------------------------------------
    def unit_gains_db(self, values: np.ndarray) -> np.ndarray:
        """Map per-unit dB changes (slots, units) to per-band changes (slots, bands)."""
        raise NotImplementedError

    def features(self, log_energy: np.ndarray) -> np.ndarray:
        """Per-frame, per-unit residuals (frames, units) from band log energies (frames, bands)."""
        raise NotImplementedError

    # -- keyed pattern -------------------------------------------------------------------
    def _rng(self, purpose: str) -> np.random.Generator:
        digest = hashlib.blake2b(
            self.key, digest_size=32, person=b"ccsm-wm-v1", salt=(self.name + purpose).encode()[:16].ljust(16, b"\0")
        )
        return np.random.default_rng(int.from_bytes(digest.digest(), "little"))

    def _pattern(self) -> tuple[np.ndarray, np.ndarray]:
        P, U = self.layout.period, self.n_units
        rng = self._rng("pattern")
        chips = rng.choice(np.array([-1.0, 1.0]), size=(P, U))
        n_cells = P * U
        n_sync = int(round(self.layout.sync_fraction * n_cells))
        if n_cells - n_sync < ecc.CODE_BITS:
            raise ValueError("layout too small for the code")
        order = rng.permutation(n_cells)
        roles = np.empty(n_cells, dtype=np.int64)
        roles[order[:n_sync]] = -1
        roles[order[n_sync:]] = np.arange(n_cells - n_sync) % ecc.CODE_BITS
        return chips, roles.reshape(P, U)

    # -- embedding -----------------------------------------------------------------------
    def embed(self, audio: np.ndarray, sample_rate: int, payload: int) -> np.ndarray:
        """``audio`` with the keyed mark carrying ``payload`` (same shape, float32)."""
        payload = ecc.check_payload(payload)
        x, sr = dsp.as_audio(audio, sample_rate)
        code = ecc.encode(payload).astype(np.float64) * 2 - 1
        sign = np.where(self.roles < 0, 1.0, code[np.maximum(self.roles, 0)])
        x16 = dsp.resample(x, sr, dsp.RATE)
        win = dsp.sqrt_hann()
        specs = [dsp.stft(x16[:, ch], HOP, win) for ch in range(x.shape[1])]
        mono_spec = np.mean(specs, axis=0)
        shape = self._shaping(mono_spec)
        strength = self._informed_strength(mono_spec, len(x16), sign, shape)
        out = np.empty_like(x)
        gain = self._gains(strength[self.roles + 1] * self.chips * sign, len(specs[0]), shape)
        for ch, spec in enumerate(specs):
            delta16 = dsp.istft(spec * (gain - 1.0), HOP, win, len(x16))
            delta = dsp.resample(delta16[:, None], dsp.RATE, sr)[:, 0]
            n = min(len(delta), len(x))
            out[:, ch] = x[:, ch]
            out[:n, ch] += delta[:n]
        out = out.astype(np.float32)
        return out[:, 0] if np.ndim(audio) == 1 else out

    def _gains(self, unit_db: np.ndarray, n_frames: int, shape: np.ndarray | None = None) -> np.ndarray:
        """Linear STFT gains (frames, bins) for per-cell dB changes (P, units), times ``shape``."""
        band_db = self.unit_gains_db(unit_db)  # (P, bands)
        slot = (np.arange(n_frames) // self.layout.slot_frames) % self.layout.period
        gain = np.ones((n_frames, dsp.N_FFT // 2 + 1))
        for b, (lo, hi) in enumerate(self.layout.bands):
            db = band_db[slot, b] if shape is None else band_db[slot, b] * shape[:, b]
            gain[:, lo:hi] = 10.0 ** (db / 20.0)[:, None]
        return gain

    def _shaping(self, spec: np.ndarray) -> np.ndarray | None:
        """Per-frame strength factor (frames, bands): more in loud frames, less in quiet ones.

        ``(frame level / mean level) ** SHAPE_GAMMA`` over the band energies, normalised to a
        mean of 1 over audible frames and kept within [0.2, SHAPE_MAX]. Loud frames mask the change
        better (wideband PESQ rises at the same mean strength) and are the ones that added
        noise leaves readable; quiet frames, which noise buries first, get little.
        """
        if not SHAPE_GAMMA:
            return None
        from .methods import moving_mean

        power = np.abs(spec) ** 2
        energy = np.stack([power[:, lo:hi].sum(axis=1) for lo, hi in self.layout.bands], axis=1)
        level = moving_mean(energy, 3, 0).mean(axis=1)
        if level.max() <= 0:
            return None
        loud = level > level.max() * 1e-5
        shape = (np.maximum(level, 1e-30) / level[loud].mean()) ** SHAPE_GAMMA
        shape = np.minimum(shape, 1e3)
        shape = np.clip(shape / shape[loud].mean(), 0.2, SHAPE_MAX)
        return np.repeat(shape[:, None], len(self.layout.bands), axis=1)

    def _cells(self, signal16: np.ndarray, active_s: list | None = None) -> np.ndarray | None:
        got = self.analyse(signal16, dsp.RATE)
        if got is None:
            return None
        if active_s is not None:
            active_s.append(got[1].sum() * DET_HOP / dsp.RATE)
        M = self._fold(got[0], 1.0)
        return M[SUB * np.arange(self.layout.period)]

    def _informed_strength(
        self, mono_spec: np.ndarray, n: int, sign: np.ndarray, shape: np.ndarray | None = None
    ) -> np.ndarray:
        """Strength per group (sync, then each code bit), set from the host (informed embedding).

        Each group's detector sum is ``gain * strength + host``; we measure both on the mono
        mix and pick strengths that give every group the same margin at the same average
        strength, so no bit is lost to the host's own spectrum. Then, where the host leaves the
        mark weak (the detector's score on the marked mix, per sqrt(second) of audible signal,
        below ADAPT_REF), every strength is raised by ``sqrt(ADAPT_REF / rate)``, at most
        ADAPT_MAX x: hosts that hide the mark poorly (e.g. high voices with sparse harmonics)
        get more of it; the others are left as they are.
        """
        base = np.full(ecc.CODE_BITS + 1, self.strength_db)
        if not INFORMED:
            return base
        win = dsp.sqrt_hann()
        host_sig = dsp.istft(mono_spec, HOP, win, n)
        active_s: list = []
        host = self._cells(host_sig, active_s)
        if host is None:
            return base
        idx = self.roles + 1

        def sums(R: np.ndarray) -> np.ndarray:
            out = np.zeros(ecc.CODE_BITS + 1)
            np.add.at(out, idx, (self.chips * sign * R))
            return out

        h = sums(host)
        strength = base
        for _ in range(INFORMED):
            unit_db = strength[idx] * self.chips * sign
            marked = dsp.istft(mono_spec * self._gains(unit_db, len(mono_spec), shape), HOP, win, n)
            cells = self._cells(marked)
            if cells is None:  # the host had enough signal, and marking it only adds some
                raise RuntimeError("watermark: the marked mix has too little signal to measure")
            R = cells
            m = sums(R)
            k = np.maximum((m - h) / strength, 1e-9)  # detector gain per dB, per group
            target = np.full_like(k, np.mean(k[1:]) * self.strength_db)  # an average bit's margin
            target[0] = k[0] * self.strength_db  # sync: just take the host's share out
            strength = np.clip((target - h) / k, 0.25 * self.strength_db, MAX_BOOST * self.strength_db)
        rate = m.sum() / math.sqrt(max((R**2).sum(), 1e-20)) / math.sqrt(max(active_s[0], 1e-3))
        if self.adaptive_strength and ADAPT_REF and rate < ADAPT_REF:
            strength = strength * min(ADAPT_MAX, math.sqrt(ADAPT_REF / max(rate, 1e-6)))
        return strength

    # -- detection -----------------------------------------------------------------------
    def analyse(self, audio: np.ndarray, sample_rate: int) -> tuple[np.ndarray, np.ndarray] | None:
        """Per-frame unit residuals and frame weights, or None when there is too little signal."""
        x, sr = dsp.as_audio(audio, sample_rate)
        mono = dsp.resample(x.mean(axis=1), sr, dsp.RATE)
        spec = dsp.stft(mono, DET_HOP, dsp.hann())
        power = np.abs(spec) ** 2
        energy = np.stack([power[:, lo:hi].sum(axis=1) for lo, hi in self.layout.bands], axis=1)
        frame_e = energy.sum(axis=1)
        # dBFS of a frame: a full-scale sine gives about 0 dB
        ref = (np.hanning(dsp.N_FFT + 1)[: dsp.N_FFT].sum() / 2) ** 2 / 2
        frame_db = 10 * np.log10(frame_e / ref + 1e-30)
        active = (frame_db > SILENCE_DBFS) & (frame_db > frame_db.max() - 50.0)
        if active.sum() * DET_HOP / dsp.RATE < MIN_ACTIVE_S:
            return None
        floor = energy[active].mean() * 1e-7
        feats = self.features(np.log(energy + floor))
        feats = (feats - feats[active].mean(axis=0)) * active[:, None]
        # tame outliers so a few loud transients cannot dominate (uses the audio only)
        scale = np.sqrt(np.mean(feats[active] ** 2)) + 1e-12
        feats = np.clip(feats, -3 * scale, 3 * scale)
        w = self._snr_weights(energy, active)
        if w is not None:
            feats = feats * w
        return feats, active

    def _snr_weights(self, energy: np.ndarray, active: np.ndarray) -> np.ndarray | None:
        """Per-frame, per-unit weight ``S / (S + N)`` from the audio alone (a noise floor per band).

        Added noise is not marked, so where it dominates a cell carries little of the mark;
        weighting by the estimated signal share is the matched filter. It depends on the
        audio only, never on the key, so the p-value's bound still holds.
        """
        if WEIGHT_PCT is None or not self.snr_weighting:
            return None
        from .methods import moving_mean

        sm = moving_mean(energy, WEIGHT_SMOOTH, 0) if WEIGHT_SMOOTH > 1 else energy
        floor = np.percentile(sm[active], WEIGHT_PCT, axis=0)
        w = np.clip(1.0 - floor / np.maximum(sm, 1e-30), 0.0, 1.0)
        if w.shape[1] != self.n_units:  # units made of several bands: their mean
            w = w.reshape(w.shape[0], self.n_units, -1).mean(axis=2)
        return w

    def detect(self, audio: np.ndarray, sample_rate: int) -> WatermarkResult:
        """Presence, payload and a false-positive p-value for ``audio``."""
        got = self.analyse(audio, sample_rate)
        if got is None:
            return WatermarkResult(
                present=None,
                score=0.0,
                payload=None,
                p_value=1.0,
                reason="too little audible signal (need at least 1 s)",
            )
        feats, active = got
        return self._search(feats)

    def _scales(self, n_frames: int) -> np.ndarray:
        dur = n_frames * DET_HOP / dsp.RATE
        step = max(self.layout.slot_s / (2.0 * dur), 0.002)
        lo, hi = SCALES
        n = int(math.ceil((hi - lo) / step)) + 1
        grid = np.linspace(lo, hi, n)
        return np.unique(np.append(grid, 1.0))

    def _fold(self, feats: np.ndarray, scale: float) -> np.ndarray:
        """Moving slot sums M[k, unit] of the folded features for sub-slot offset k."""
        L = self.layout.period * SUB
        t = np.arange(feats.shape[0]) * (DET_HOP / dsp.RATE)
        q = np.floor(t / scale / (self.layout.slot_s / SUB)).astype(np.int64) % L
        Q = np.zeros((L, feats.shape[1]))
        np.add.at(Q, q, feats)
        csum = np.concatenate([Q, Q[: SUB - 1]], axis=0).cumsum(axis=0)
        csum = np.vstack([np.zeros((1, Q.shape[1])), csum])
        return csum[SUB : SUB + L] - csum[:L]  # M[k] = sum Q[k .. k+SUB-1]

    def _search(self, feats: np.ndarray) -> WatermarkResult:
        P, L = self.layout.period, self.layout.period * SUB
        sync = (self.roles < 0).astype(np.float64)
        a_up = np.zeros((L, self.n_units))
        m_up = np.zeros((L, self.n_units))
        a_up[::SUB] = self.chips * sync
        m_up[::SUB] = sync
        fa, fm = np.conj(np.fft.rfft(a_up, axis=0)), np.conj(np.fft.rfft(m_up, axis=0))
        scales = self._scales(feats.shape[0])
        # Weighted union bound (fixed before looking at the audio): the nominal time scale 1.0
        # gets prior mass NOMINAL_WEIGHT, the other scales share the rest; the sync-only and the
        # payload-aided statistics get SYNC_WEIGHT and 1 - SYNC_WEIGHT. A hypothesis of mass w
        # whose tail bound is t is reported as t / w, so the p-value stays a union bound.
        n_other = len(scales) - 1

        def n_eff(s: float) -> float:  # hypotheses "paid" per offset at scale s: 1 / (its mass)
            if s == 1.0:
                return L / (NOMINAL_WEIGHT if n_other else 1.0)
            return n_other * L / (1.0 - NOMINAL_WEIGHT)

        cands, nominal = [], []
        for s in scales:
            M = self._fold(feats, s)
            S = np.fft.irfft(fa * np.fft.rfft(M, axis=0), n=L, axis=0).sum(axis=1)
            V = np.fft.irfft(fm * np.fft.rfft(M**2, axis=0), n=L, axis=0).sum(axis=1)
            z = S / np.sqrt(np.maximum(V, 1e-20))
            order = np.argsort(z)[::-1]
            cands += [(float(z[k]), float(s), int(k)) for k in order[:OFFSETS_PER_SCALE]]
            if s == 1.0:  # every offset of the nominal scale is decoded (0.5 ms each)
                nominal = [(float(z[k]), float(s), int(k)) for k in order]
        cands.sort(reverse=True)
        tried = cands[:TOP_HYPOTHESES] + [c for c in nominal if c not in cands[:TOP_HYPOTHESES]]
        sync_p = sorted((_p_value(z0, n_eff(s)), z0, s, k) for z0, s, k in cands)
        p_sync, z_sync = sync_p[0][0] / SYNC_WEIGHT, sync_p[0][1]
        best: tuple = (p_sync, z_sync, None, sync_p[0][1:], 1.0)
        data = self.roles >= 0
        folds: dict = {}
        for z0, s, k in tried:  # the best offsets of the best scales, and all of the nominal scale
            M = folds[s] if s in folds else folds.setdefault(s, self._fold(feats, s))
            R = M[(k + SUB * np.arange(P)) % L]  # cell values (P, units)
            soft = np.zeros(ecc.CODE_BITS)
            np.add.at(soft, self.roles[data], (self.chips * R)[data])
            payload = ecc.decode(soft)
            if payload is None:  # (the ML decoder always gives one; kept for other codes)
                continue
            code = ecc.encode(payload).astype(np.float64) * 2 - 1
            sign = np.where(self.roles < 0, 1.0, code[np.maximum(self.roles, 0)])
            z_full = float((self.chips * sign * R).sum() / math.sqrt(max((R**2).sum(), 1e-20)))
            # union bound over every hypothesis and every payload the decoder could have chosen
            p_full = _p_value(z_full, n_eff(s) * 2.0**ecc.PAYLOAD_BITS) / (1.0 - SYNC_WEIGHT)
            if best[2] is None or p_full < best[4]:
                best = (min(p_full, p_sync), max(z_full, z_sync), payload, (z0, s, k), p_full)
        p = min(1.0, best[0])
        present = p < self.threshold
        s, k = best[3][1], best[3][2]
        raw = best[2]
        if raw is None:  # best-effort bits at the best sync hypothesis, for diagnostics
            M = self._fold(feats, s)
            R = M[(k + SUB * np.arange(P)) % L]
            soft = np.zeros(ecc.CODE_BITS)
            np.add.at(soft, self.roles[data], (self.chips * R)[data])
            raw = ecc.decode(soft, check=False)
        return WatermarkResult(
            present=present,
            score=best[1],
            payload=best[2] if present else None,
            p_value=p,
            scale=s,
            offset_s=k * self.layout.slot_s / SUB,
            reason="" if present else "no mark for this key",
            raw_payload=raw,
        )


def _p_value(z: float, n_hyp: float) -> float:
    """Union bound over ``n_hyp`` hypotheses of the tail of a Rademacher sum.

    For ``S = sum(e_i a_i)`` with independent random signs ``e_i`` and ``z = S / |a|``,
    ``P(z >= t) <= min(exp(-t^2/2), 2e^3/9 * Q(t))`` (Hoeffding; Pinelis 1994), ``Q`` the
    standard normal tail. This holds for any audio, so the p-value is an upper bound.
    """
    if z <= 0:
        return 1.0
    tail = min(math.exp(-0.5 * z * z), 2 * math.e**3 / 9 * 0.5 * math.erfc(z / math.sqrt(2)))
    return float(min(1.0, n_hyp * tail))
