"""The machinery shared by every method: keyed layout, embedding, synchronised detection.

A method splits the 16 kHz STFT into *cells*: a time slot of ``slot_frames`` hops (16 ms
each) times one *unit* (a frequency band, or a pair of bands). The key draws, for one
block of ``period`` slots, a random sign (chip) per cell and gives each cell a role: part of
the synchronisation pattern, or a carrier of one of the 150 code bits or 75 check bits of the payload. The
block repeats for the whole signal, so any excerpt of a marked signal holds the pattern.

Embedding changes the level of every cell by ``chip * strength`` dB (times the code bit's
sign for data cells): a multiplicative change, so the mark follows the signal's own
spectrum and is masked by it (see `embedder` for the shaping). Detection computes one residual per frame and unit (the
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from . import dsp, ecc
from .result import WatermarkResult

if TYPE_CHECKING:
    from .embedder import StreamEmbedder

HOP = 256  # embedding hop at 16 kHz (16 ms)
DET_HOP = 128  # detection hop (8 ms)
SUB = 4  # offset resolution: a quarter of a slot
MIN_ACTIVE_S = 1.0  # less audible signal than this: cannot tell
SILENCE_DBFS = -60.0  # frames quieter than this (and 50 dB below the loudest) are silence
DEFAULT_THRESHOLD = 1e-6
PAYLOAD_THRESHOLD = 1e-4  # a payload is reported when its check bits reach this (chance a wrong one does)
SCALES = (0.93, 1.075)  # time-scale range searched (covers tempo 0.93 .. 1.075)
TOP_HYPOTHESES = 16  # sync hypotheses whose payload is decoded (the p-value counts them all anyway)
OFFSETS_PER_SCALE = 2
NOMINAL_WEIGHT = 0.5  # prior mass of the union bound on time scale 1.0 (most audio is not re-timed)
SYNC_WEIGHT = 0.1  # ... on the sync-only statistic (the payload-aided one gets the rest)
WEIGHT_PCT = 10.0  # detector: noise floor per band = this percentile of its smoothed energy
WEIGHT_SMOOTH = 33  # frames of smoothing (264 ms, several slots, so the mark averages out)


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

    def __init__(
        self,
        key: bytes,
        layout: Layout,
        strength_db: float,
        threshold: float = DEFAULT_THRESHOLD,
        payload_threshold: float = PAYLOAD_THRESHOLD,
    ) -> None:
        if not isinstance(key, (bytes, bytearray)) or len(key) < 1:
            raise ValueError("key must be non-empty bytes")
        if not 0 < float(strength_db) <= 6:
            raise ValueError(f"strength_db must be in (0, 6], got {strength_db!r}")
        if not 0 < float(threshold) < 1:
            raise ValueError(f"threshold must be in (0, 1), got {threshold!r}")
        self.key, self.layout = bytes(key), layout
        if not 0 < float(payload_threshold) < 1:
            raise ValueError(f"payload_threshold must be in (0, 1), got {payload_threshold!r}")
        self.strength_db, self.threshold = float(strength_db), float(threshold)
        self.payload_threshold = float(payload_threshold)
        self.chips, self.roles = self._pattern()

    # -- to be provided by methods -------------------------------------------------------
    def unit_gains_db(self, values: np.ndarray) -> np.ndarray:
        """Map per-unit dB changes (slots, units) to per-band changes (slots, bands)."""
        raise NotImplementedError

    def features(self, log_energy: np.ndarray) -> list[np.ndarray]:
        """Per-frame, per-unit residuals (frames, units) from band log energies (frames, bands),
        one matrix per detector front-end (the p-value pays for trying each)."""
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
        if n_cells - n_sync < ecc.ALL_BITS:
            raise ValueError("layout too small for the code")
        order = rng.permutation(n_cells)
        roles = np.empty(n_cells, dtype=np.int64)
        roles[order[:n_sync]] = -1
        roles[order[n_sync:]] = np.arange(n_cells - n_sync) % ecc.ALL_BITS
        return chips, roles.reshape(P, U)

    def cell_signs(self, payload: int) -> np.ndarray:
        """The +-1 change of every cell of a block (period, units) for ``payload``: its chip,
        times the code bit (or check bit) the cell carries."""
        code = ecc.encode(payload).astype(np.float64) * 2 - 1
        bits = np.concatenate([code, ecc.check_signs(self.key, payload)])
        return self.chips * np.where(self.roles < 0, 1.0, bits[np.maximum(self.roles, 0)])

    # -- embedding -----------------------------------------------------------------------
    def embed(self, audio: np.ndarray, sample_rate: int, payload: int) -> np.ndarray:
        """``audio`` with the keyed mark carrying ``payload`` (same shape, float32)."""
        from .embedder import embed

        return embed(self, audio, sample_rate, payload)

    def stream(self, sample_rate: int, payload: int) -> StreamEmbedder:
        """A `StreamEmbedder`: ``push(block) -> marked samples``, ``flush() -> the rest``."""
        from .embedder import StreamEmbedder

        return StreamEmbedder(self, sample_rate, ecc.check_payload(payload))

    def mark_score(self, marked: np.ndarray, sample_rate: int, payload: int) -> float:
        """The detector's score of ``payload``'s mark in ``marked`` as embedded (start at 0, no
        time change): what an embedder checks before it promises a mark (0: too little signal)."""
        got = self.analyse(marked, sample_rate)
        if got is None:
            return 0.0
        L = self.layout.period * SUB
        signs, scores = self.cell_signs(payload), []
        for feats in got[0]:
            R = self._fold(feats, 1.0)[(SUB * np.arange(self.layout.period)) % L]
            scores.append(float((signs * R).sum() / math.sqrt(max((R**2).sum(), 1e-20))))
        return max(scores)

    # -- detection -----------------------------------------------------------------------
    def analyse(self, audio: np.ndarray, sample_rate: int) -> tuple[list[np.ndarray], np.ndarray] | None:
        """Per-frame unit residuals (one matrix per front-end of `features`) and the audible
        frames, or None when there is too little signal."""
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
        w = self._snr_weights(energy, active)
        out = []
        for feats in self.features(np.log(energy + floor)):
            feats = (feats - feats[active].mean(axis=0)) * active[:, None]
            # tame outliers so a few loud transients cannot dominate (uses the audio only)
            scale = np.sqrt(np.mean(feats[active] ** 2)) + 1e-12
            feats = np.clip(feats, -3 * scale, 3 * scale)
            out.append(feats if w is None else feats * w)
        return out, active

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
        results = [self._search(feats, len(got[0])) for feats in got[0]]
        return min(results, key=lambda r: (r.p_value, -r.score))

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
        n = feats.shape[0]
        t = np.arange(n) * (DET_HOP / dsp.RATE)
        q = np.floor(t / scale / (self.layout.slot_s / SUB)).astype(np.int64) % L
        order = np.argsort(q, kind="stable")  # frames grouped by their place in the block
        starts = np.searchsorted(q[order], np.arange(L))
        Q = np.add.reduceat(feats[order], np.minimum(starts, n - 1), axis=0)
        Q[starts >= n] = 0.0  # places no frame falls on (audio shorter than a block)
        Q[:-1][starts[1:] == starts[:-1]] = 0.0  # empty places (reduceat repeats the next row)
        csum = np.concatenate([Q, Q[: SUB - 1]], axis=0).cumsum(axis=0)
        csum = np.vstack([np.zeros((1, Q.shape[1])), csum])
        return csum[SUB : SUB + L] - csum[:L]  # M[k] = sum Q[k .. k+SUB-1]

    def _search(self, feats: np.ndarray, front_ends: int = 1) -> WatermarkResult:
        L = self.layout.period * SUB
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
                return front_ends * L / (NOMINAL_WEIGHT if n_other else 1.0)
            return front_ends * n_other * L / (1.0 - NOMINAL_WEIGHT)

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
        best = self._decode(feats, tried, n_eff)
        if best is None:
            return WatermarkResult(
                present=False, score=z_sync, payload=None, p_value=min(1.0, p_sync), reason="no mark for this key"
            )
        p_full, z_full, payload, s, k, p_check = best
        p = min(1.0, p_full, p_sync)
        present = p < self.threshold
        trusted = present and p_check < self.payload_threshold
        reason = ""
        if not present:
            reason = "no mark for this key"
        elif not trusted:
            reason = "mark found; its payload failed the check (too degraded to read)"
        return WatermarkResult(
            present=present,
            score=max(z_full, z_sync),
            payload=payload if trusted else None,
            p_value=p,
            payload_p_value=p_check,
            scale=s,
            offset_s=k * self.layout.slot_s / SUB,
            reason=reason,
            raw_payload=payload,
        )

    def _decode(self, feats: np.ndarray, tried: list, n_eff: Callable[[float], float]) -> tuple | None:
        """Decode the payload at every hypothesis ``(z, scale, offset)`` of ``tried`` (in one
        matrix product per half); the best one's p-value, score, payload, scale, offset and
        the p-value of its check bits.

        The hypothesis is chosen on the sync and code cells only; the check cells, which carry
        keyed signs derived from the payload, are tested once, afterwards: for a wrong payload
        those signs are independent of the audio, so the check's tail bound is the chance that
        a wrong payload passes it, whatever the attack."""
        P, L = self.layout.period, self.layout.period * SUB
        code_cells = (self.roles >= 0) & (self.roles < ecc.CODE_BITS)
        sel = (self.roles < ecc.CODE_BITS).ravel()  # sync and code cells
        folds: dict = {}
        cells = []
        for _, s, k in tried:
            M = folds[s] if s in folds else folds.setdefault(s, self._fold(feats, s))
            cells.append(M[(k + SUB * np.arange(P)) % L])
        if not cells:
            return None
        R = np.stack(cells)  # (H, P, units)
        onehot = np.zeros((P * self.n_units, ecc.CODE_BITS))
        flat = np.flatnonzero(code_cells.ravel())
        onehot[flat, self.roles.ravel()[flat]] = 1.0
        soft = (self.chips * R).reshape(len(cells), -1) @ onehot  # (H, 150)
        payloads = ecc.decode_many(soft)
        best = None
        for h, payload in enumerate(payloads):
            signs = self.cell_signs(payload).ravel()
            r = R[h].ravel()
            z = float((signs * r)[sel].sum() / math.sqrt(max((r[sel] ** 2).sum(), 1e-20)))
            # union bound over every hypothesis and every payload the decoder could have chosen
            p = _p_value(z, n_eff(tried[h][1]) * 2.0**ecc.PAYLOAD_BITS) / (1.0 - SYNC_WEIGHT)
            if best is None or p < best[0] or (p == best[0] and z > best[1]):
                best = (p, z, payload, tried[h][1], tried[h][2], h)
        assert best is not None
        r = R[best[5]].ravel()
        chk = (self.roles >= ecc.CODE_BITS).ravel()
        z_check = float((self.cell_signs(best[2]).ravel() * r)[chk].sum() / math.sqrt(max((r[chk] ** 2).sum(), 1e-20)))
        return (*best[:5], _p_value(z_check, 1.0))


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
