"""MLX has no ``matmul_rows``: MimiBatchDecoder decodes stream by stream there, still each
stream exactly as its own decoder."""

from __future__ import annotations

import pytest

pytest.importorskip("mlx.core")

from ccsm_mlx.backend import MlxBackend  # noqa: E402

from ccsm_core.models.mimi_batch import MimiBatchDecoder  # noqa: E402
from ccsm_core.testing.mimi_batch import check_batch_is_each_stream_alone, small_mimi  # noqa: E402


def test_mimi_batch_falls_back_to_stream_by_stream():
    be = MlxBackend(cache="off")
    mimi = small_mimi(be)
    assert not MimiBatchDecoder(mimi, 3).batched
    check_batch_is_each_stream_alone(be, slots=3, mimi=mimi)
