"""Synthetic speech-like test material (no files, no network, no ffmpeg)."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_watermark.synth import speechlike  # noqa: F401  (the tests import it from here)

pytest_plugins = ["ccsm_core.testing.fixtures"]


@pytest.fixture(scope="session")
def speech24() -> np.ndarray:
    return speechlike(8.0, 24000, seed=1)
