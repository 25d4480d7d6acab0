"""Dropping context turns that do not fit, by strategy."""

from __future__ import annotations

import numpy as np
import pytest

from ccsm_core.context import fit_context, importance
from ccsm_core.errors import GenerationError, UsageError
from ccsm_core.generator import GenerationSettings, Generator, Segment

CODES = np.ones((32, 3), np.int64)


def turns():
    # speaker, has audio; costs below
    return [
        Segment(0, "a", codes=CODES),
        Segment(1, "b"),
        Segment(0, "c"),
        Segment(1, "d", codes=CODES),
        Segment(1, "e"),
    ]


COSTS = [10, 10, 10, 10, 10]


def test_everything_fits():
    f = fit_context(turns(), COSTS, 50, target_speaker=0)
    assert f.dropped == [] and len(f.kept) == 5


def test_recency_drops_oldest():
    f = fit_context(turns(), COSTS, 30, target_speaker=0, strategy="recency")
    assert f.dropped == [0, 1]
    assert [t.text for t in f.kept] == ["c", "d", "e"]


def test_importance_drops_least_important():
    scores = [importance(i, 5, t, 0) for i, t in enumerate(turns())]
    assert scores == pytest.approx([3.0, 0.2, 2.4, 1.6, 0.8])
    f = fit_context(turns(), COSTS, 30, target_speaker=0, strategy="importance")
    assert f.dropped == [1, 3]  # scores 0.2 and 1.6; the newest (0.8) is protected
    assert [t.text for t in f.kept] == ["a", "c", "e"]


def test_hybrid_keeps_two_newest():
    f = fit_context(turns(), COSTS, 30, target_speaker=0, strategy="hybrid")
    assert f.dropped == [1, 2]
    assert [t.text for t in f.kept] == ["a", "d", "e"]
    f = fit_context(turns(), COSTS, 10, target_speaker=0, strategy="hybrid")
    assert [t.text for t in f.kept] == ["e"]


def test_newest_always_kept_or_clear_error():
    f = fit_context(turns(), [10, 10, 10, 10, 25], 25, target_speaker=0)
    assert [t.text for t in f.kept] == ["e"]
    with pytest.raises(GenerationError, match="newest turn alone"):
        fit_context(turns(), [10, 10, 10, 10, 30], 25, target_speaker=0)
    with pytest.raises(UsageError):
        fit_context(turns(), COSTS, 25, target_speaker=0, strategy="random")


def test_generator_drops_turns_instead_of_failing(tiny_csm_dir):
    from ccsm_core.loading.csm import load_csm

    lm = load_csm(tiny_csm_dir, "numpy")
    gen = Generator(lm.model, lm.tokenizer)
    long_codes = np.ones((32, 700), np.int64)
    ctx = [
        Segment(1, "old", codes=long_codes),
        Segment(0, "middle", codes=long_codes),
        Segment(1, "new", codes=long_codes),
    ]
    frames = gen.generate("Hi", 0, ctx, GenerationSettings(max_audio_ms=160, topk=1))
    assert gen.dropped == [0]
    assert frames.shape[1] == 32
    gen.generate("Hi", 0, ctx, GenerationSettings(max_audio_ms=160, topk=1, context_strategy="importance"))
    assert gen.dropped == [0]  # speaker 1, older: lower score than the speaker-0 turn
