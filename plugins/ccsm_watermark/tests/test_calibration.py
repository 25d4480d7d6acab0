"""The p-value is a bound on false positives: unmarked audio never reaches 1e-6."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_watermark import METHODS, create, ecc
from conftest import speechlike


@pytest.mark.parametrize("method", list(METHODS))
def test_no_false_positive_on_unmarked(method: str) -> None:
    rng = np.random.default_rng(7)
    ps = []
    for trial in range(30):
        kind = trial % 3
        if kind == 0:
            x = rng.normal(0, 0.1, 24000 * 3).astype(np.float32)
        elif kind == 1:
            x = (np.cumsum(rng.normal(0, 0.01, 24000 * 3)) % 0.5).astype(np.float32)  # odd spectrum
            x -= x.mean()
        else:
            x = speechlike(3.0, 24000, seed=100 + trial)
        r = create(method, rng.bytes(16)).detect(x, 24000)
        assert r.present is False, (trial, r)
        ps.append(r.p_value)
    # most unmarked trials are nowhere near significance
    assert np.median(ps) > 0.01


def test_p_value_bound_holds_for_random_statistics() -> None:
    """Simulate the detector's null: random-sign sums over fixed heavy-tailed magnitudes."""
    from ccsm_watermark.engine import _p_value

    rng = np.random.default_rng(3)
    a = rng.standard_cauchy(500)
    z = (rng.choice([-1.0, 1.0], size=(20000, 500)) @ a) / np.sqrt(np.sum(a * a))
    for level in (1e-1, 1e-2, 1e-3):
        hits = np.mean([_p_value(v, 1) < level for v in z[:5000]])
        assert hits <= level * 1.5 + 1e-3


def test_code_corrects_errors() -> None:
    rng = np.random.default_rng(0)
    for payload in (0xDEADBEEF, 0, 0xFFFFFFFF, 0x00010001):
        code = ecc.encode(payload).astype(float) * 2 - 1
        assert code.size == ecc.CODE_BITS
        noisy = code + rng.normal(0, 0.5, code.size)
        noisy[::8] *= -1  # nineteen hard errors, spread out (the layout interleaves code bits)
        assert ecc.decode(noisy) == payload
    # ML decoding: at a per-bit SNR well below one, most frames still come out right
    code = ecc.encode(0xC0FFEE42).astype(float) * 2 - 1
    ok = sum(ecc.decode(0.8 * code + rng.normal(size=code.size)) == 0xC0FFEE42 for _ in range(50))
    assert ok >= 45
    # garbage always decodes to *some* payload: the detector's p-value (which counts all 2^32
    # payloads) is what rejects it, see test_no_false_positive_on_unmarked
