"""The fused decoder (codes picked inside the frame's graph) samples exactly as the host path: NumPy."""

from __future__ import annotations

import numpy as np
import pytest

from ccsm_core.backends.numpy_backend import NumpyBackend
from ccsm_core.generator import FrameSampler, GenerationSettings, fused_plan
from ccsm_core.models.csm import CSM
from ccsm_core.models.csm_fused import FusedPlan, exact_picks
from ccsm_core.sampling import SamplingSettings, build_sampler
from ccsm_core.testing.fused import (
    assert_batch_is_each_alone,
    assert_frame_batch_is_each_alone,
    assert_same,
    compare_frames,
    skew_draws,
    tie_tensors,
)
from ccsm_core.testing.models import TINY_CONFIG, tiny_csm_tensors

SETTINGS = [
    {"guard_special": True},  # the speech defaults: temperature 0.9, top-k 50, bans 2048..2050
    {"temperature": 0, "guard_special": True},
    {"temperature": 3.0, "topk": 5},
    {"temperature": 0.5, "topk": 64, "guard_special": True, "min_frames": 2},
]


@pytest.fixture(scope="module")
def model() -> CSM:
    return CSM(NumpyBackend(), TINY_CONFIG, tiny_csm_tensors(TINY_CONFIG, seed=3))


def test_drawing_all_steps_at_once_equals_one_draw_per_step():
    for seed in range(20):
        a, b = np.random.default_rng(seed), np.random.default_rng(seed)
        together = a.exponential(1.0, size=(31, 50))
        apart = np.stack([b.exponential(1.0, size=50) for _ in range(31)])
        np.testing.assert_array_equal(together, apart)
        assert a.bit_generator.state == b.bit_generator.state


@pytest.mark.parametrize(
    ("settings", "want"),
    [
        ({"guard_special": True}, FusedPlan((2048, 2049, 2050), 0.9, 50, False)),
        ({"temperature": 0}, FusedPlan((), None, 1, True)),
        ({"temperature": 1.0, "topk": 64}, FusedPlan((), 1.0, 64, False)),
        ({"topk": 65}, None),
        ({"topk": None}, None),
        ({"top_p": 0.9}, None),
        ({"min_p": 0.1}, None),
        ({"repetition_penalty": 1.1}, None),
        ({"logit_bias": {5: 1.0}}, None),
        ({"logit_bias": {5: -np.inf}}, FusedPlan((5,), 0.9, 50, False)),
        ({"extra_processors": [("top-k", {"k": 3})]}, None),
    ],
)
def test_which_chains_the_graph_samples(settings, want):
    fs = FrameSampler(GenerationSettings(**settings), 2051, 32)
    assert fs.fused_plan() == want


def test_a_traced_sampler_is_not_fused():
    assert FrameSampler(GenerationSettings(), 2051, 32, trace=lambda *a: None).fused_plan() is None


@pytest.mark.parametrize("settings", SETTINGS)
def test_frames_equal_the_host_path_on_many_seeds(model, settings):
    for seed in range(12):
        fused, host, starts = compare_frames(model, seed, **settings)
        assert_same(fused, host)
        assert starts and all(s == 32 for s in starts)  # every frame stood in the graph


@pytest.mark.parametrize("settings", [{"temperature": 1.0, "topk": 5}, {"temperature": 0}])
def test_ties_at_the_top_k_boundary_hand_back_to_the_host_exactly(settings):
    model = CSM(NumpyBackend(), TINY_CONFIG, tie_tensors())
    handed = []
    for seed in range(8):
        fused, host, starts = compare_frames(model, seed, **settings)
        assert_same(fused, host)
        handed += starts
    assert any(s < 32 for s in handed)  # the ties did reach the boundary (or the top, greedy)


def test_a_graph_pick_the_host_disagrees_with_hands_back_exactly(model, monkeypatch):
    """Draws seen differently by the graph (as a float32 near-tie would) from step 7 on: the
    host keeps steps 1..6, rewinds the generator and samples the rest itself."""
    skew_draws(monkeypatch, 7)
    for seed in range(6):
        fused, host, starts = compare_frames(model, seed, guard_special=True)
        assert_same(fused, host)
        assert all(s <= 7 for s in starts) and any(s == 7 for s in starts)


def test_nan_logits_raise_as_on_the_host(model, monkeypatch):
    from ccsm_core.errors import GenerationError

    heads = list(model.audio_heads)
    model.audio_heads[4] = np.full_like(heads[4], np.nan)
    try:
        with pytest.raises(GenerationError, match="NaN"):
            compare_frames(model, 0, guard_special=True)
    finally:
        model.audio_heads[:] = heads


def test_vectorised_exact_picks_equal_the_sampler_chain():
    """The host check over many rows (random, and with ties) picks what `SamplerChain` picks,
    and lets a row stand exactly when no tie sits at the top-k boundary."""
    rng = np.random.default_rng(7)
    k, t, vocab, rows = 7, 0.7, 300, 600
    chain = build_sampler(temperature=t, topk=k, logit_bias={0: -np.inf, 1: -np.inf})
    logits = rng.standard_normal((rows, vocab)).astype(np.float32) * 3
    logits[::3, 2::2] = logits[::3, 3::2]  # ties in a third of the rows
    want = np.array([chain(np.zeros(0, np.int64), logits[r], np.random.default_rng(r)) for r in range(rows)])
    q = np.stack([np.random.default_rng(r).exponential(1.0, size=k) for r in range(rows)])
    x = logits.copy()
    x[:, [0, 1]] = -np.inf
    top = np.argsort(-x, axis=1, kind="stable")[:, : k + 1]
    packed = np.concatenate(
        [np.take_along_axis(x, top, 1), top, want[:, None], logits.sum(1, keepdims=True)], axis=1
    ).astype(np.float32)
    picks, ok = exact_picks(packed, FusedPlan((0, 1), t, k, False), q)
    y = np.sort(x / np.float32(t), axis=1)
    tie = y[:, -k] == y[:, -k - 1]
    assert 50 < tie.sum() < rows // 3 + 1
    np.testing.assert_array_equal(ok, ~tie)
    np.testing.assert_array_equal(picks[~tie], want[~tie])


def test_fused_plan_reads_only_built_in_parts():
    chain = SamplingSettings(temperature=0.9, topk=50).to_chain()
    assert fused_plan(chain) == FusedPlan((), 0.9, 50, False)
    chain.processors[0] = lambda tokens, logits: logits  # an undescribed processor: the host path
    assert fused_plan(chain) is None


BATCH = [
    {"seed": 0, "guard_special": True},
    {"seed": 1, "temperature": 2.5, "guard_special": True},
    {"seed": 2, "temperature": 0.3, "logit_bias": {7: -np.inf, 9: -np.inf}},
    {"seed": 3, "guard_special": True, "min_frames": 2},
]


@pytest.mark.parametrize(
    "streams",
    [
        BATCH,
        BATCH[:1],
        [{"seed": 4, "temperature": 0}, {"seed": 5, "topk": 1, "temperature": 1.5}, {"seed": 6, "temperature": 0}],
    ],
)
def test_batched_streams_are_each_alone_with_codes_picked_in_the_graph(model, streams):
    """Different seeds, temperatures and bans (greedy beside top-k 1) in one graph per frame."""
    starts = assert_batch_is_each_alone(model, streams)
    assert starts == [32] * (3 * len(streams))  # every stream frame stood in the graph


def test_batched_streams_with_different_top_k_take_the_host_path(model):
    mixed = [{"seed": 0, "temperature": 0}, {"seed": 1, "guard_special": True}]
    assert assert_batch_is_each_alone(model, mixed) == []


@pytest.mark.parametrize("settings", [{"temperature": 1.0, "topk": 5}, {"temperature": 0}])
def test_batched_ties_hand_back_to_the_host_exactly(settings):
    model = CSM(NumpyBackend(), TINY_CONFIG, tie_tensors())
    starts = assert_batch_is_each_alone(model, [{"seed": s, **settings} for s in range(4)], frames=4)
    assert any(s < 32 for s in starts)


def test_one_batched_stream_the_host_disagrees_with_hands_back_alone(model, monkeypatch):
    """Stream 2 of 4 sees its draws reversed from step 9 on: it resumes on the host from
    codebook 9 at the latest, the other streams keep their graph picks, all exactly."""
    skew_draws(monkeypatch, 9, stream=2)
    starts = np.array(assert_batch_is_each_alone(model, BATCH)).reshape(3, 4)
    assert (starts[:, [0, 1, 3]] == 32).all()
    assert (starts[:, 2] <= 9).all() and (starts[:, 2] == 9).any()


def test_frame_batch_streams_are_each_alone_with_codes_picked_in_the_graph(model):
    streams = [{"seed": s, "temperature": 0.5 + s / 4, "topk": 20, "guard_special": True} for s in range(5)]
    starts = assert_frame_batch_is_each_alone(model, streams)
    assert starts and all(s == 32 for s in starts)
