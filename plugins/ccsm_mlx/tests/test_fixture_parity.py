"""CSM and Mimi on MLX (f32) against the original's recordings (the core's fixtures)."""

from __future__ import annotations

from pathlib import Path

from ccsm_core.testing.parity import FixtureParity

FIXTURE = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"


class TestMlxParity(FixtureParity):
    backend_name = "mlx"
    fixture_dir = FIXTURE


def test_reused_prompt_rows_give_the_fresh_frames():
    from ccsm_core.testing.parity import assert_prompt_cache_exact

    assert_prompt_cache_exact("mlx", FIXTURE)
