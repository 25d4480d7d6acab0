"""MimiBatchDecoder on ggml-cpu: bitwise each stream's own decoder (one and two threads), one
captured graph per batch size, and the batched convolutions against their stream-by-stream form."""

from __future__ import annotations

import numpy as np
import pytest
from ccsm_cpu.backend import GgmlBackend

from ccsm_core.models.mimi_batch import MimiBatchDecoder
from ccsm_core.testing.mimi_batch import (
    SCHEDULE,
    check_batch_is_each_stream_alone,
    check_chunks_from_any_slot,
    decode_together,
    small_mimi,
)
from ccsm_core.testing.mimi_lanes import check_lanes_are_each_stream_alone


@pytest.mark.parametrize("opts", [{"threads": 1}, {"threads": 2, "min_parallel_work": 0}])
def test_batch_is_each_stream_alone(opts):
    with GgmlBackend(**opts) as be:
        sizes = check_batch_is_each_stream_alone(be, slots=4)
    assert len(set(sizes)) == 4


def test_chunks_from_any_slot_and_lanes_are_each_stream_alone():
    """Chunks of 1..8 frames from any first slot (one graph per streams, frames and first slot),
    and `MimiLanes` jobs pushing, taking, undoing and leaving at different turns."""
    with GgmlBackend(threads=2, min_parallel_work=0) as be:
        dec = check_chunks_from_any_slot(be)
        assert dec._graphs is not None and len(dec._graphs) == 9
        assert max(check_lanes_are_each_stream_alone(be, slots=4)) >= 3


def test_one_graph_per_batch_size():
    with GgmlBackend(threads=1) as be:
        mimi = small_mimi(be)
        rng = np.random.default_rng(2)
        codes = [rng.integers(0, 2048, (32, n)) for _, n in SCHEDULE]
        dec = MimiBatchDecoder(mimi, 4)
        assert dec.batched
        graphs = dec._graphs
        _, sizes = decode_together(mimi, codes, [s for s, _ in SCHEDULE], 4)
        assert graphs is not None and len(graphs) == 0  # that run used its own decoder
        for j in range(3):
            dec.reset(j)
        for _ in range(3):
            dec.step(rng.integers(0, 2048, (3, 32, 1)))
        dec.step(rng.integers(0, 2048, (2, 32, 1)))
        assert len(graphs) == 2  # B = 3 and B = 2, each captured once


@pytest.mark.parametrize(
    "cin,cout,k,dil,t",
    [
        (512, 64, 7, 1, 8),  # few outputs: the weight streamed as src0, streams as the batch axis
        (80, 24, 3, 1, 66),  # im2col matmul: the streams' columns as more rows
        (64, 32, 3, 1, 66),  # out_prod: stream by stream
        (16, 8, 3, 2, 20),
    ],
)
@pytest.mark.parametrize("b", [1, 2, 3])
def test_conv1d_batch_is_each_stream(cin, cout, k, dil, t, b):
    rng = np.random.default_rng(cin + t + b)
    with GgmlBackend(threads=2, min_parallel_work=0) as be:
        w = be.weight(rng.standard_normal((cout, cin, k)).astype(np.float32))
        bias = be.weight(rng.standard_normal(cout).astype(np.float32))
        x = rng.standard_normal((b, cin, t)).astype(np.float32)
        got = be.to_numpy(be.conv1d_batch(be.asarray(x), w, bias, dilation=dil))
        alone = [be.to_numpy(be.conv1d(be.asarray(x[i]), w, bias, dilation=dil)) for i in range(b)]
    np.testing.assert_array_equal(got, np.stack(alone))


@pytest.mark.parametrize(
    "cin,cout,k,s,t,groups", [(256, 64, 16, 8, 2, 1), (64, 32, 10, 5, 24, 1), (16, 16, 4, 2, 3, 16)]
)
@pytest.mark.parametrize("b", [1, 2, 4])
def test_conv_transpose1d_batch_is_each_stream(cin, cout, k, s, t, groups, b):
    rng = np.random.default_rng(cin + t + b)
    with GgmlBackend(threads=2, min_parallel_work=0) as be:
        w = be.weight(rng.standard_normal((cin, cout // groups, k)).astype(np.float32))
        bias = be.weight(rng.standard_normal(cout).astype(np.float32))
        x = rng.standard_normal((b, cin, t)).astype(np.float32)
        got = be.to_numpy(be.conv_transpose1d_batch(be.asarray(x), w, bias, stride=s, groups=groups))
        alone = [be.to_numpy(be.conv_transpose1d(be.asarray(x[i]), w, bias, stride=s, groups=groups)) for i in range(b)]
    np.testing.assert_array_equal(got, np.stack(alone))
