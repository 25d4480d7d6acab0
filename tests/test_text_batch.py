"""Batched text completions: `generate_many`, leaving early, errors (each sequence as alone is
tested on every backend by the conformance suite)."""

from __future__ import annotations

import pytest

from ccsm_core.errors import UsageError
from ccsm_core.loading.text import load_text_model
from ccsm_core.testing.text_models import write_tiny_text
from ccsm_core.text_batch import TextBatch, generate_many
from ccsm_core.textgen import TextSession, TextSettings


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    path = write_tiny_text(tmp_path_factory.mktemp("m") / "t.gguf", "llama", seed=4, context=300)
    return load_text_model(path, "numpy")


def test_generate_many_is_each_prompt_alone(loaded):
    prompts = [[0, 2, 3], [0, 4, 5, 6, 7], "abcd", [0, 9]]
    settings = [TextSettings(max_tokens=6 + 3 * i, temperature=0.8, seed=i) for i in range(len(prompts))]
    got = generate_many(loaded, prompts, settings, batch=2)
    want = [TextSession(loaded).generate(p, s) for p, s in zip(prompts, settings)]
    assert [(c.ids, c.text, c.finish_reason, c.prompt_tokens) for c in got] == [
        (c.ids, c.text, c.finish_reason, c.prompt_tokens) for c in want
    ]


def test_a_closed_stream_frees_its_slot_for_a_waiting_one(loaded):
    tb = TextBatch(loaded, slots=1)
    s = TextSettings(max_tokens=50, temperature=0.0)
    first, second = tb.stream([0, 2, 3], s), tb.stream([0, 4, 5], s)
    next(first)
    assert (tb.active, tb.waiting) == (1, 1)
    first.close()
    assert (tb.active, tb.waiting) == (0, 1)
    assert "".join(second) == TextSession(loaded).generate([0, 4, 5], s).text
    assert tb.active == 0


def test_bad_requests_fail_at_the_caller(loaded):
    with pytest.raises(UsageError, match="batch size"):
        TextBatch(loaded, slots=0)
    with pytest.raises(UsageError, match="settings"):
        generate_many(loaded, ["a", "b"], [TextSettings(), TextSettings(), TextSettings()])
    tb = TextBatch(loaded, slots=2)
    with pytest.raises(UsageError):
        tb.stream("a", TextSettings(max_tokens=0))
    empty = tb.stream([], TextSettings())  # the prompt fails when it joins: only its reader sees it
    with pytest.raises(UsageError, match="empty"):
        next(empty)
    assert tb.active == 0
