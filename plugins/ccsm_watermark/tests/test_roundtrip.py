"""Embed/detect round trips, robustness to crops and offsets, keys and degenerate input."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_watermark import DEFAULT_METHOD, METHODS, PUBLIC_DEFAULT_KEY, create
from conftest import speechlike

PAYLOAD = 0xC0FFEE42
KEY = b"test key 0123456789"


@pytest.mark.parametrize("method", list(METHODS))
def test_round_trip_24k_mono(method: str, speech24: np.ndarray) -> None:
    wm = create(method, KEY)
    marked = wm.embed(speech24, 24000, PAYLOAD)
    assert marked.shape == speech24.shape and marked.dtype == np.float32
    snr = 10 * np.log10(np.sum(speech24**2) / np.sum((marked - speech24) ** 2))
    assert 10 < snr < 60  # changed, but not much (loud frames get up to 3x the mean strength)
    r = wm.detect(marked, 24000)
    assert r.present is True and r.payload == PAYLOAD and r.p_value < 1e-6
    clean = wm.detect(speech24, 24000)
    assert clean.present is False and clean.payload is None and clean.p_value > 1e-6


@pytest.mark.parametrize("method", list(METHODS))
@pytest.mark.parametrize("rate,channels", [(16000, 1), (44100, 2), (48000, 1), (22050, 2)])
def test_round_trip_rates_and_channels(method: str, rate: int, channels: int) -> None:
    x = speechlike(6.0, rate, seed=rate + channels)
    if channels == 2:
        x = np.stack([x, 0.5 * np.roll(x, 321)], axis=1)
    wm = create(method, KEY)
    marked = wm.embed(x, rate, 0x12345678)
    assert marked.shape == x.shape
    r = wm.detect(marked, rate)
    assert r.present is True and r.payload == 0x12345678


@pytest.mark.parametrize("method", list(METHODS))
def test_crop_and_offset(method: str, speech24: np.ndarray) -> None:
    wm = create(method, KEY)
    marked = wm.embed(speech24, 24000, PAYLOAD)
    cropped = marked[int(1.37 * 24000) :]  # a cut that is no multiple of anything
    padded = np.concatenate([np.zeros(5000, np.float32), marked[: int(6 * 24000)]])
    for y in (cropped, padded):
        r = wm.detect(y, 24000)
        assert r.present is True and r.payload == PAYLOAD


def test_wrong_key_is_not_present(speech24: np.ndarray) -> None:
    marked = create(DEFAULT_METHOD, KEY).embed(speech24, 24000, PAYLOAD)
    for other in (b"another key", PUBLIC_DEFAULT_KEY):
        r = create(DEFAULT_METHOD, other).detect(marked, 24000)
        assert r.present is False and r.payload is None


def test_methods_do_not_see_each_other(speech24: np.ndarray) -> None:
    marked = create("ss-stft", KEY).embed(speech24, 24000, PAYLOAD)
    assert create("patchwork", KEY).detect(marked, 24000).present is False


@pytest.mark.parametrize("method", list(METHODS))
def test_silence_short_and_near_silent_cannot_tell(method: str, speech24: np.ndarray) -> None:
    wm = create(method, KEY)
    silent = np.zeros(24000 * 3, np.float32)
    assert wm.embed(silent, 24000, 1).shape == silent.shape
    for y in (silent, 1e-6 * speech24, wm.embed(speech24, 24000, PAYLOAD)[: int(0.8 * 24000)]):
        r = wm.detect(y, 24000)
        assert r.present is None and r.payload is None and r.reason


def test_payload_range_and_input_validation(speech24: np.ndarray) -> None:
    wm = create(DEFAULT_METHOD, KEY)
    for bad in (-1, 1 << 32, 2.5, True):
        with pytest.raises(ValueError):
            wm.embed(speech24, 24000, bad)
    assert wm.detect(wm.embed(speech24, 24000, 0xFFFFFFFF), 24000).payload == 0xFFFFFFFF
    with pytest.raises(ValueError):
        wm.embed(speech24, 4000, 1)
    with pytest.raises(ValueError):
        wm.embed(speech24.astype(np.int16), 24000, 1)
    with pytest.raises(ValueError):
        create("nope", KEY)
    with pytest.raises(ValueError):
        create(DEFAULT_METHOD, b"")


def test_gain_change_keeps_mark(speech24: np.ndarray) -> None:
    wm = create(DEFAULT_METHOD, KEY)
    marked = wm.embed(speech24, 24000, PAYLOAD)
    assert wm.detect(0.3 * marked, 24000).payload == PAYLOAD
