"""Every kind of material: music, speech over music, noise; streaming; payload trust."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_watermark import DEFAULT_METHOD, create, synth

KEY = b"material test key 01"
PAYLOAD = 0xC0FFEE42


def _snr(x: np.ndarray, y: np.ndarray) -> float:
    return float(10 * np.log10(np.sum(x.astype(float) ** 2) / np.sum((y.astype(float) - x) ** 2)))


@pytest.mark.parametrize("kind,seed", [("music", 0), ("music", 1), ("music", 2), ("speech+music", 0), ("noise", 0)])
def test_every_kind_is_marked_and_read(kind: str, seed: int) -> None:
    x = synth.clip(kind, 10.0, 24000, seed)
    wm = create(DEFAULT_METHOD, KEY)
    marked = wm.embed(x, 24000, PAYLOAD)
    if kind == "music":
        assert _snr(x, marked) >= 20.0  # the target
    elif kind == "noise":  # no SNR target: 19.2 dB since the 1.8 x weight above 3.4 kHz (20.1 before)
        assert _snr(x, marked) >= 18.5
    r = wm.detect(marked, 24000)
    assert r.present is True and r.payload == PAYLOAD and r.payload_p_value < 1e-4
    assert wm.detect(x, 24000).present is False  # the same clip unmarked


def test_music_survives_noise_and_a_cut() -> None:
    x = synth.clip("music", 10.0, 24000, 0)
    wm = create(DEFAULT_METHOD, KEY)
    marked = wm.embed(x, 24000, PAYLOAD)
    rng = np.random.default_rng(1)
    noisy = marked + rng.normal(0, np.sqrt(np.mean(marked**2) / 100), len(marked)).astype(np.float32)
    assert wm.detect(noisy, 24000).payload == PAYLOAD
    assert wm.detect(marked[int(1.37 * 24000) :], 24000).payload == PAYLOAD


@pytest.mark.parametrize("block", [1, 997, 1920, 24000])
def test_stream_equals_whole_and_keeps_length(block: int) -> None:
    x = synth.speechlike(3.0, 24000, seed=3)[: 24000 * 2 + 123]
    wm = create(DEFAULT_METHOD, KEY)
    whole = wm.embed(x, 24000, PAYLOAD)
    s = wm.stream(24000, PAYLOAD)
    step = block if block > 1 else 7  # odd small blocks too
    parts = [s.push(x[i : i + step]) for i in range(0, len(x), step)]
    lag = max(len(x[: i + step]) - sum(len(p) for p in parts[: i // step + 1]) for i in range(0, len(x), step))
    parts.append(s.flush())
    out = np.concatenate(parts)
    assert len(out) == len(x)
    np.testing.assert_allclose(out, whole, atol=1e-6)
    assert lag <= 2 * 384 + step  # the look-ahead is small and fixed (two 16-ms hops)


def test_streamed_mark_is_found_in_any_5s_excerpt() -> None:
    x = synth.clip("speech+music", 20.0, 24000, 4)
    wm = create(DEFAULT_METHOD, KEY)
    s = wm.stream(24000, PAYLOAD)
    out = np.concatenate([*(s.push(x[i : i + 1920]) for i in range(0, len(x), 1920)), s.flush()])
    read = 0
    for start in (0.0, 3.3, 7.77, 11.1, 15.0):
        a = int(start * 24000)
        r = wm.detect(out[a : a + 5 * 24000], 24000)
        assert r.present is True and r.payload in (None, PAYLOAD), (start, r)
        read += r.payload == PAYLOAD
    assert read >= 3  # the payload's check needs more signal than presence; 5 s is near its limit


def test_stream_refuses_odd_rates_and_bad_blocks() -> None:
    wm = create(DEFAULT_METHOD, KEY)
    with pytest.raises(ValueError):
        wm.stream(44100, 1)
    s = wm.stream(24000, 1)
    s.push(np.zeros((100, 2), np.float32))
    with pytest.raises(ValueError):
        s.push(np.zeros((100, 3), np.float32))


def test_no_wrong_payload_and_no_false_positive_over_many_trials() -> None:
    """Unmarked clips and clips marked with another key: never present, never a payload;
    heavily degraded marked clips: a payload, when given, is the right one."""
    rng = np.random.default_rng(11)
    wm = create(DEFAULT_METHOD, KEY)
    base = [synth.clip(k, 4.0, 16000, s) for k in synth.KINDS for s in range(2)]
    other = [create(DEFAULT_METHOD, rng.bytes(16)).embed(b, 16000, PAYLOAD) for b in base[:4]]
    trials = 0
    for i in range(25):
        for y in (*base, *other):
            z = y * rng.uniform(0.2, 1.0)
            if i % 2:
                z = z + rng.normal(0, np.sqrt(np.mean(z**2)) * 0.1, len(z)).astype(np.float32)
            r = create(DEFAULT_METHOD, rng.bytes(16) if i % 3 == 0 else KEY).detect(z, 16000)
            trials += 1
            assert r.present is not True and r.payload is None
    assert trials >= 300
    wrong = given = 0
    for seed in range(12):  # marked, then buried under noise at 6-14 dB SNR
        x = synth.clip(synth.KINDS[seed % 4], 4.0, 16000, 50 + seed)
        m = wm.embed(x, 16000, PAYLOAD)
        for snr in (6, 10, 14):
            y = m + rng.normal(0, np.sqrt(np.mean(m**2) / 10 ** (snr / 10)), len(m)).astype(np.float32)
            r = wm.detect(y, 16000)
            given += r.payload is not None
            wrong += r.payload is not None and r.payload != PAYLOAD
    assert wrong == 0 and given > 0


def test_mark_score_reports_unmarkable_material() -> None:
    wm = create(DEFAULT_METHOD, KEY)
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(24000 * 4) / 24000)).astype(np.float32)
    assert wm.mark_score(wm.embed(tone, 24000, 1), 24000, 1) < 11.0
    x = synth.clip("music", 8.0, 24000, 0)
    assert wm.mark_score(wm.embed(x, 24000, 1), 24000, 1) > 11.0


def test_quiet_frames_are_left_alone_and_high_bands_carry_more() -> None:
    """Frames 12 dB or more under the recent mean power get no change (where PESQ minds it
    most); bands from 3.4 kHz up get more of the change than those under it."""
    rate = 24000
    x = synth.clip("noise", 6.0, rate, 0).astype(np.float64)
    x[3 * rate :] *= 10 ** (-20 / 20)  # the second half 20 dB quieter
    marked = create(DEFAULT_METHOD, KEY).embed(x.astype(np.float32), rate, PAYLOAD).astype(np.float64)
    change = marked - x
    loud, quiet = change[rate : 3 * rate], change[int(3.1 * rate) : int(4.5 * rate)]  # the mean adapts over 3 s
    assert np.sqrt(np.mean(loud**2)) > 1e-4
    assert np.max(np.abs(quiet)) < 1e-6  # float32 rounding only
    f = np.fft.rfftfreq(len(loud), 1 / rate)
    rel = np.abs(np.fft.rfft(loud)) ** 2 / np.maximum(np.abs(np.fft.rfft(x[rate : 3 * rate])) ** 2, 1e-30)
    low, high = rel[(f > 600) & (f < 3300)].mean(), rel[(f > 3500) & (f < 6900)].mean()
    assert high > 2 * low  # 1.8 x against 0.9 x the strength: about 4 x the relative energy
