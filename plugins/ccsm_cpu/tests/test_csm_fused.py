"""ggml-cpu: the selection ops, and CSM's fused decoder (one captured graph per frame that picks
its codes) giving exactly the host path's codes and generator state."""

from __future__ import annotations

import numpy as np
import pytest

from ccsm_core.backends.base import has_select_ops
from ccsm_core.models.csm import CSM
from ccsm_core.testing.conformance import quantized
from ccsm_core.testing.fused import (
    assert_batch_is_each_alone,
    assert_frame_batch_is_each_alone,
    assert_same,
    compare_frames,
    skew_draws,
    tie_tensors,
)
from ccsm_core.testing.models import TINY_CONFIG, tiny_csm_tensors


@pytest.fixture(scope="module")
def be():
    from ccsm_cpu.backend import GgmlBackend

    b = GgmlBackend(threads=2)
    yield b
    b.close()


@pytest.fixture(scope="module")
def model(be) -> CSM:
    return CSM(be, TINY_CONFIG, tiny_csm_tensors(TINY_CONFIG, seed=3))


def test_selection_ops(be):
    assert has_select_ops(be)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 300)).astype(np.float32)
    top = be.top_k(be.asarray(x), 9)
    assert sorted(be.to_numpy(top)[0]) == sorted(np.argsort(-x[0])[:9])
    order = be.to_numpy(be.argsort(be.asarray(x), descending=True))
    np.testing.assert_array_equal(order[0], np.argsort(-x[0]))
    np.testing.assert_array_equal(be.to_numpy(be.argsort(be.asarray(x)))[0], np.argsort(x[0]))
    table = rng.standard_normal((300, 64)).astype(np.float32)
    w = be.weight(quantized("w", table, "Q8_0"))
    ids = be.top_k(be.asarray(x), 4)
    rows = be.to_numpy(be.take(w, ids))
    want = be.to_numpy(be.embedding(w, be.asarray(be.to_numpy(ids)[0])))
    np.testing.assert_array_equal(rows, want)
    f = be.asarray(np.array([[3.0, 7.9, 2050.0]], np.float32))
    np.testing.assert_array_equal(be.to_numpy(be.astype(f, "int32")), [[3, 7, 2050]])
    np.testing.assert_array_equal(be.to_numpy(be.astype(be.astype(f, "int32"), "float32")), [[3, 7, 2050]])


@pytest.mark.parametrize(
    "settings",
    [
        {"guard_special": True},
        {"temperature": 0, "guard_special": True},
        {"temperature": 3.0, "topk": 5, "min_frames": 2},
    ],
)
def test_frames_equal_the_host_path_on_many_seeds(model, settings):
    for seed in range(10):
        fused, host, starts = compare_frames(model, seed, **settings)
        assert_same(fused, host)
        assert starts and all(s == 32 for s in starts)


@pytest.mark.parametrize("settings", [{"temperature": 1.0, "topk": 5}, {"temperature": 0}])
def test_ties_hand_back_to_the_host_exactly(be, settings):
    model = CSM(be, TINY_CONFIG, tie_tensors())
    handed = []
    for seed in range(6):
        fused, host, starts = compare_frames(model, seed, **settings)
        assert_same(fused, host)
        handed += starts
    assert any(s < 32 for s in handed)


def test_a_graph_pick_the_host_disagrees_with_hands_back_exactly(model, monkeypatch):
    skew_draws(monkeypatch, 11)
    for seed in range(4):
        fused, host, starts = compare_frames(model, seed, guard_special=True)
        assert_same(fused, host)
        assert all(s <= 11 for s in starts) and any(s == 11 for s in starts)


def test_quantized_frames_equal_the_host_path(be):
    tensors = {
        k: quantized(k, v, "Q8_0") if v.ndim == 2 and v.shape[-1] % 32 == 0 else v
        for k, v in tiny_csm_tensors(TINY_CONFIG, seed=5).items()
    }
    model = CSM(be, TINY_CONFIG, tensors)
    for seed in range(4):
        fused, host, starts = compare_frames(model, seed, guard_special=True)
        assert_same(fused, host)
        assert all(s == 32 for s in starts)


def test_one_captured_graph_serves_every_temperature_and_ban_of_a_top_k(model):
    """Bans and temperature are inputs of the frame graph: settings that differ in them alone
    share it on one cache, each frame still as the host path samples it."""
    from ccsm_core.generator import FrameSampler, GenerationSettings

    cfg = model.cfg
    _, cache = model.new_caches()
    _, host_cache = model.new_caches()
    rng = np.random.default_rng(5)
    for seed, settings in enumerate([{"guard_special": True}, {"temperature": 2.5}, {"temperature": 0.3}]):
        h = rng.standard_normal((1, cfg.backbone.embed_dim)).astype(np.float32)
        c0 = rng.standard_normal(cfg.audio_vocab_size).astype(np.float32)
        fused = FrameSampler(GenerationSettings(seed=seed, **settings), cfg.audio_vocab_size, cfg.audio_num_codebooks)
        host = FrameSampler(GenerationSettings(seed=seed, **settings), cfg.audio_vocab_size, cfg.audio_num_codebooks)
        got = model.frame(h, fused, cache, c0_logits=c0)
        want = model.frame(h, lambda i, logits, host=host: host(i, logits), host_cache, c0_logits=c0)
        np.testing.assert_array_equal(got, want)
        assert fused.rng.bit_generator.state == host.rng.bit_generator.state
    assert [key for key in cache.steps if isinstance(key, tuple)] == [("fused", 50)]


BATCH = [
    {"seed": 0, "guard_special": True},
    {"seed": 1, "temperature": 2.5, "guard_special": True},
    {"seed": 2, "temperature": 0.3, "logit_bias": {7: -np.inf, 9: -np.inf}},
]


@pytest.mark.parametrize(
    "streams",
    [BATCH, [{"seed": 4, "temperature": 0}, {"seed": 5, "topk": 1, "temperature": 1.5}]],
)
def test_batched_streams_are_each_alone_with_codes_picked_in_the_graph(model, streams):
    starts = assert_batch_is_each_alone(model, streams)
    assert starts == [32] * (3 * len(streams))


def test_batched_quantized_streams_are_each_alone(be):
    tensors = {
        k: quantized(k, v, "Q8_0") if v.ndim == 2 and v.shape[-1] % 32 == 0 else v
        for k, v in tiny_csm_tensors(TINY_CONFIG, seed=5).items()
    }
    starts = assert_batch_is_each_alone(CSM(be, TINY_CONFIG, tensors), BATCH)
    assert starts == [32] * 9


@pytest.mark.parametrize("settings", [{"temperature": 1.0, "topk": 5}, {"temperature": 0}])
def test_batched_ties_hand_back_to_the_host_exactly(be, settings):
    model = CSM(be, TINY_CONFIG, tie_tensors())
    starts = assert_batch_is_each_alone(model, [{"seed": s, **settings} for s in range(3)], frames=4)
    assert any(s < 32 for s in starts)


def test_one_batched_stream_the_host_disagrees_with_hands_back_alone(model, monkeypatch):
    skew_draws(monkeypatch, 13, stream=1)
    starts = np.array(assert_batch_is_each_alone(model, BATCH)).reshape(3, 3)
    assert (starts[:, [0, 2]] == 32).all()
    assert (starts[:, 1] <= 13).all() and (starts[:, 1] == 13).any()


def test_frame_batch_streams_are_each_alone_with_codes_picked_in_the_graph(model):
    streams = [{"seed": s, "temperature": 0.5 + s / 4, "topk": 20, "guard_special": True} for s in range(4)]
    starts = assert_frame_batch_is_each_alone(model, streams)
    assert starts and all(s == 32 for s in starts)
