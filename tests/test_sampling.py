"""Logit processors, samplers and the chain."""

from __future__ import annotations

import numpy as np
import pytest

from ccsm_core import sampling as S
from ccsm_core.errors import UsageError
from ccsm_core.sampling import build_sampler

LOGITS = np.array([1.0, 3.0, 2.0, 3.0, -1.0], np.float32)
NONE = np.zeros(0, np.int64)


def kept(x: np.ndarray) -> list[int]:
    return [int(i) for i in np.flatnonzero(np.isfinite(x))]


def test_top_k_keeps_ties():
    assert kept(S.top_k(1)(NONE, LOGITS)) == [1, 3]
    assert kept(S.top_k(3)(NONE, LOGITS)) == [1, 2, 3]
    assert kept(S.top_k(99)(NONE, LOGITS)) == [0, 1, 2, 3, 4]


def test_top_p_and_min_p():
    logits = np.log(np.array([0.5, 0.3, 0.15, 0.05], np.float32))
    assert kept(S.top_p(0.5)(NONE, logits)) == [0]
    assert kept(S.top_p(0.8)(NONE, logits)) == [0, 1]
    assert kept(S.top_p(0.81)(NONE, logits)) == [0, 1, 2]
    assert kept(S.min_p(0.5)(NONE, logits)) == [0, 1]
    assert kept(S.min_p(0.0)(NONE, logits)) == [0, 1, 2, 3]


def test_penalties_and_bias():
    toks = np.array([1, 1, 4])
    np.testing.assert_allclose(S.repetition_penalty(2.0)(toks, LOGITS), [1, 1.5, 2, 3, -2])
    np.testing.assert_allclose(S.frequency_penalty(0.5)(toks, LOGITS), [1, 2, 2, 3, -1.5])
    np.testing.assert_allclose(S.presence_penalty(0.5)(toks, LOGITS), [1, 2.5, 2, 3, -1.5])
    np.testing.assert_allclose(S.logit_bias({0: 5.0})(NONE, LOGITS), [6, 3, 2, 3, -1])
    assert kept(S.logit_bias({1: -np.inf})(NONE, LOGITS)) == [0, 2, 3, 4]


def test_temperature_divides():
    np.testing.assert_allclose(S.temperature(0.5)(NONE, LOGITS), LOGITS * 2)


@pytest.mark.parametrize(
    "kw",
    [
        {"temperature": -0.1},
        {"topk": 0},
        {"topk": 1.5},
        {"top_p": 0},
        {"top_p": 1.2},
        {"min_p": -0.1},
        {"repetition_penalty": 0},
        {"frequency_penalty": 3},
    ],
)
def test_bad_values_are_usage_errors(kw):
    with pytest.raises(UsageError):
        build_sampler(**kw)


def test_greedy_and_temperature_zero():
    rng = np.random.default_rng(0)
    assert build_sampler(temperature=0)(NONE, LOGITS, rng) == 1  # lowest id on ties
    assert build_sampler(temperature=1.0, topk=1)(NONE, np.array([0, 5, 1], np.float32), rng) == 1


def test_categorical_matches_distribution():
    chain = build_sampler(temperature=1.0)
    rng = np.random.default_rng(42)
    logits = np.log(np.array([0.6, 0.3, 0.1], np.float32))
    draws = np.bincount([chain(NONE, logits, rng) for _ in range(6000)], minlength=3) / 6000
    np.testing.assert_allclose(draws, [0.6, 0.3, 0.1], atol=0.03)


def test_large_vocabulary_top_k_is_exact():
    """Big vocabularies narrow the k-th-largest search with a sample; the result never changes."""
    rng = np.random.default_rng(5)
    for trial in range(300):
        n = int(rng.choice([8192, 49152, 151936]))
        k = int(rng.integers(1, 300))
        x = (rng.standard_normal(n) * rng.uniform(0.1, 10)).astype(np.float32)
        if trial % 3 == 0:
            x[rng.integers(0, n, n // 2)] = -np.inf
        if trial % 4 == 0:
            x = np.round(x)  # many ties
        want = np.partition(x, -k)[-k]
        assert S._kth_largest(x, k) == want
        np.testing.assert_array_equal(S.top_k(k)(NONE, x), np.where(x < want, -np.inf, x))


def test_filtered_distribution_is_sampled_exactly():
    """Draws are taken over the ids the filters left, in the proportions of their probabilities."""
    chain = build_sampler(temperature=1.0, top_p=0.9)
    rng = np.random.default_rng(7)
    logits = np.log(np.array([0.5, 0.05, 0.3, 0.1, 0.05], np.float32))  # top-p keeps ids 0, 2, 3
    draws = np.bincount([chain(NONE, logits, rng) for _ in range(9000)], minlength=5) / 9000
    np.testing.assert_allclose(draws, [5 / 9, 0, 3 / 9, 1 / 9, 0], atol=0.02)
    lp = S.log_softmax(np.array([0.0, -np.inf, np.log(3.0)], np.float32))
    np.testing.assert_allclose(np.exp(lp), [0.25, 0, 0.75], rtol=1e-6)


def test_seeded_reproducible():
    logits = np.random.default_rng(0).standard_normal(100).astype(np.float32)
    a = [build_sampler(temperature=0.9, topk=50)(NONE, logits, r) for r in [np.random.default_rng(7)] * 20]
    b = [build_sampler(temperature=0.9, topk=50)(NONE, logits, r) for r in [np.random.default_rng(7)] * 20]
    assert a == b and len(set(a)) > 1


def test_chain_order_and_names():
    chain = build_sampler(temperature=0.7, topk=5, top_p=0.9, min_p=0.1, repetition_penalty=1.1, logit_bias={1: 1})
    assert chain.names == ["logit-bias", "repetition-penalty", "temperature", "top-k", "top-p", "min-p", "categorical"]


def test_everything_filtered_is_an_error():
    chain = build_sampler(temperature=1.0, logit_bias={i: -np.inf for i in range(5)})
    with pytest.raises(UsageError, match="filtered out"):
        chain(NONE, LOGITS, np.random.default_rng(0))


def test_processor_as_sampler_is_refused():
    with pytest.raises(UsageError, match="not a sampler"):
        build_sampler(sampler="top-k")


def test_generator_seeded_and_min_frames(tiny_csm_dir):
    from ccsm_core.generator import GenerationSettings, Generator
    from ccsm_core.loading.csm import load_csm

    lm = load_csm(tiny_csm_dir, "numpy")
    gen = Generator(lm.model, lm.tokenizer)
    s = GenerationSettings(max_audio_ms=400, temperature=0.9, topk=50, seed=3)
    a, b = gen.generate("Hi", 0, (), s), gen.generate("Hi", 0, (), s)
    np.testing.assert_array_equal(a, b)
    c = gen.generate("Hi", 0, (), GenerationSettings(max_audio_ms=400, temperature=0.9, topk=50, seed=4))
    assert not np.array_equal(a, c)
    # a bias that makes code 0 win everywhere ends generation at once, unless min_frames forbids it
    zero = {0: 1e4}
    assert len(gen.generate("Hi", 0, (), GenerationSettings(max_audio_ms=400, topk=1, logit_bias=zero))) == 0
    kept_frames = gen.generate("Hi", 0, (), GenerationSettings(max_audio_ms=400, topk=1, logit_bias=zero, min_frames=3))
    assert len(kept_frames) == 3 and (kept_frames[:, 0] != 0).all()


def test_guard_special_codes(tiny_csm_dir):
    from ccsm_core.generator import GenerationSettings, Generator
    from ccsm_core.loading.csm import load_csm

    lm = load_csm(tiny_csm_dir, "numpy")
    gen = Generator(lm.model, lm.tokenizer)
    push = {2049: 1e4}
    frames = gen.generate("Hi", 0, (), GenerationSettings(max_audio_ms=160, topk=1, logit_bias=push))
    assert (frames == 2049).all()  # the original can emit special ids
    guarded = gen.generate(
        "Hi", 0, (), GenerationSettings(max_audio_ms=160, topk=1, logit_bias=push, guard_special=True)
    )
    assert guarded.max() < 2048


def test_sampling_settings_defaults_and_keywords():
    from dataclasses import replace

    from ccsm_core.builtin.samplers import SPEECH_DEFAULTS, TEXT_DEFAULTS
    from ccsm_core.generator import GenerationSettings
    from ccsm_core.sampling import SamplingSettings
    from ccsm_core.textgen import TextSettings

    speech, text = GenerationSettings(), TextSettings()
    assert speech.sampling == SamplingSettings(temperature=0.9, topk=50) == SamplingSettings(**SPEECH_DEFAULTS)
    assert text.sampling == SamplingSettings(temperature=0.8, topk=40, top_p=0.95, min_p=0.05)
    assert text.sampling == SamplingSettings(**TEXT_DEFAULTS)
    assert (speech.max_audio_ms, speech.min_frames, speech.guard_special, speech.context_strategy) == (
        90_000,
        0,
        False,
        "recency",
    )
    assert (text.max_tokens, text.stop) == (128, ())
    s = GenerationSettings(max_audio_ms=400, topk=1, seed=3, logit_bias={0: 1.0})
    assert s.sampling == SamplingSettings(temperature=0.9, topk=1, seed=3, logit_bias={0: 1.0})
    own = SamplingSettings(temperature=0.5)
    assert GenerationSettings(sampling=own).sampling is own
    assert GenerationSettings(sampling=own, seed=2).sampling == SamplingSettings(temperature=0.5, seed=2)
    assert TextSettings(temperature=0, max_tokens=16).sampling.temperature == 0
    assert replace(s, guard_special=True).sampling == s.sampling
    with pytest.raises(TypeError, match="GenerationSettings.*'top_k'"):
        GenerationSettings(top_k=5)
    with pytest.raises(TypeError, match="TextSettings.*'nope'"):
        TextSettings(nope=1)
    with pytest.raises(AttributeError):
        speech.temperature = 0.5  # type: ignore[attr-defined]  # sampling values live in .sampling


def test_sampling_settings_chain():
    from ccsm_core.sampling import SamplingSettings

    s = SamplingSettings(temperature=0.7, topk=5, top_p=0.9, min_p=0.1, repetition_penalty=1.1, logit_bias={1: 1})
    assert (
        s.to_chain().names
        == build_sampler(temperature=0.7, topk=5, top_p=0.9, min_p=0.1, repetition_penalty=1.1, logit_bias={1: 1}).names
    )
    # before the greedy sampler, filters that keep the most likely id are checked, then left out
    greedy = SamplingSettings(temperature=0, topk=40, top_p=0.95, min_p=0.05, presence_penalty=0.5)
    assert greedy.to_chain().names == ["presence-penalty", "greedy"]
    assert SamplingSettings(temperature=0.5, topk=3, sampler="greedy").to_chain().names == ["temperature", "greedy"]
    extra = SamplingSettings(temperature=0, topk=3, extra_processors=[("top-p", {"p": 0.5})])
    assert extra.to_chain().names == ["top-k", "top-p", "greedy"]
    with pytest.raises(UsageError, match="top-p"):
        SamplingSettings(temperature=0, top_p=2).to_chain()
    rng = np.random.default_rng(0)
    for _ in range(50):
        x = np.round(rng.standard_normal(300) * 3).astype(np.float32)  # ties: the lowest id still wins
        full = build_sampler(temperature=0, topk=40, top_p=0.95, min_p=0.05)
        assert greedy.to_chain()(NONE, x, rng) == full(NONE, x, rng) == int(np.argmax(x))
    a, b = SamplingSettings(seed=4).rng(), SamplingSettings(seed=4).rng()
    assert a.random() == b.random()


def test_builtin_names_are_the_sampling_functions():
    from ccsm_core.builtin.samplers import PROCESSORS, SAMPLERS
    from ccsm_core.plugins import registry

    reg = registry("samplers")
    for names, kind in ((PROCESSORS, "processor"), (SAMPLERS, "sampler")):
        for name in names:
            assert callable(getattr(S, name.replace("-", "_"))), name
            assert reg.get(name).kind == kind and reg.get(name).plugin == "ccsm.samplers"
    assert callable(reg.get("top-k").factory(k=3)) and callable(reg.get("greedy").factory())


@pytest.mark.parametrize("command", ["run", "generate", "chat"])
def test_command_defaults_are_the_settings_defaults(command):
    from ccsm_core.cli import cli
    from ccsm_core.commands.common import sampling_from
    from ccsm_core.generator import GenerationSettings
    from ccsm_core.textgen import TextSettings

    cmd = cli.commands[command]
    ctx = cmd.make_context(command, ["hi"] if command != "chat" else [])
    want = GenerationSettings() if command == "run" else TextSettings()
    assert sampling_from(ctx.params) == want.sampling


def test_greedy_skips_normalising_and_picks_as_before():
    """Greedy reads the processed logits directly (no log-softmax over the vocabulary): the
    same id as the argmax of the normalised values, ties to the lowest id, filtered ids never."""
    from ccsm_core.sampling import SamplerChain, greedy, log_softmax, logit_bias

    rng = np.random.default_rng(0)
    chain = SamplerChain([logit_bias({3: -np.inf})], greedy())
    for _ in range(200):
        x = rng.standard_normal(50).astype(np.float32)
        x[rng.integers(0, 50, 3)] = x.max()  # ties
        want = int(np.argmax(log_softmax(logit_bias({3: -np.inf})(np.zeros(0), x))))
        assert chain(np.zeros(0, np.int64), x, rng) == want != 3


@pytest.mark.parametrize(
    "options",
    [
        {"temperature": 0.9, "topk": 50, "logit_bias": {2048: -np.inf, 2049: -np.inf, 2050: -np.inf}},
        {"temperature": 0.8, "top_p": 0.9, "min_p": 0.05, "logit_bias": {3: 2.5, 10: -1.0}},
        {"temperature": 1.2, "topk": 3, "repetition_penalty": 1.3},
        {"temperature": 1.0},
    ],
)
def test_categorical_shortcut_draws_as_the_full_log_softmax(options):
    """The chain hands the built-in categorical sampler only the live ids' log-probabilities;
    the id drawn and the random state after it equal drawing from the whole normalised vector."""
    from ccsm_core.sampling import log_softmax

    fast = build_sampler(**options)
    full = build_sampler(**options)
    draw = full.sampler
    full.sampler = lambda logprobs, rng: draw(logprobs, rng)  # no shortcut: log_softmax over all ids
    assert hasattr(fast.sampler, "draw_live") and not hasattr(full.sampler, "draw_live")
    for trial in range(400):
        g = np.random.default_rng(trial)
        x = (g.standard_normal(2051) * 3).astype(np.float32)
        if trial % 3 == 0:
            x = np.round(x)  # ties at the top-k boundary
        if trial % 5 == 0:
            x[g.integers(0, 2051, 100)] = -np.inf
        tokens = g.integers(0, 2051, 20)
        r1, r2 = np.random.default_rng(trial + 1), np.random.default_rng(trial + 1)
        assert fast(tokens, x, r1) == full(tokens, x, r2)
        assert r1.bit_generator.state == r2.bit_generator.state
    assert log_softmax(np.array([0.0, -np.inf], np.float32))[1] == -np.inf


def test_broken_logits_are_named_after_one_pass():
    from ccsm_core.errors import GenerationError

    chain = build_sampler(temperature=0.9, topk=5)
    rng = np.random.default_rng(0)
    for bad, word in (([np.nan, 1.0, np.inf], "NaN"), ([np.inf, 1.0], "infinite"), ([-np.inf, -np.inf], "infinite")):
        with pytest.raises(GenerationError, match=word):
            chain(np.zeros(0, np.int64), np.array(bad, np.float32), rng)
    with pytest.raises(UsageError, match="filtered out"):
        build_sampler(temperature=0.9, logit_bias={0: -np.inf, 1: -np.inf})(
            np.zeros(0, np.int64), np.array([1.0, 2.0], np.float32), rng
        )


def test_frame_sampler_history_grows_past_its_first_rows():
    """Each codebook's codes so far reach the chain (a repetition penalty sees all of them),
    also after the history outgrows its first 64 rows."""
    from ccsm_core.generator import FrameSampler, GenerationSettings

    s = GenerationSettings(temperature=0.9, topk=8, repetition_penalty=1.5, seed=3)
    fs = FrameSampler(s, 2051, 4)
    seen: list[list[int]] = [[] for _ in range(4)]
    chain = fs.chain
    got = []
    fs.chain = lambda tokens, logits, rng: got.append(tokens.copy()) or chain(tokens, logits, rng)
    g = np.random.default_rng(0)
    for frame in range(150):
        fs.frame_no = frame + 100
        for i in range(4):
            code = fs(i, g.standard_normal(2051).astype(np.float32))
            assert got[-1].tolist() == seen[i]
            seen[i].append(code)
