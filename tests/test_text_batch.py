"""Batched text completions: `generate_many`, leaving early, errors (each sequence as alone is
tested on every backend by the conformance suite)."""

from __future__ import annotations

import numpy as np
import pytest

from ccsm_core.errors import UsageError
from ccsm_core.loading.text import load_text_model
from ccsm_core.testing.conformance import read_in_turns, recording_logits
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
    with pytest.raises(UsageError, match="prefill batch"):
        TextBatch(loaded, slots=2, prefill_batch=0)
    with pytest.raises(UsageError, match="settings"):
        generate_many(loaded, ["a", "b"], [TextSettings(), TextSettings(), TextSettings()])
    tb = TextBatch(loaded, slots=2)
    with pytest.raises(UsageError):
        tb.stream("a", TextSettings(max_tokens=0))
    empty = tb.stream([], TextSettings())  # the prompt fails when it joins: only its reader sees it
    with pytest.raises(UsageError, match="empty"):
        next(empty)
    assert tb.active == 0


def _long(n: int, seed: int) -> list[int]:
    return [0] + [(7 * seed + 3 * j) % 16 + 2 for j in range(n - 1)]


def test_a_long_prompt_joining_while_others_decode_is_as_alone(loaded, monkeypatch):
    """A prompt of many prefill chunks joins while two sequences decode: every sequence's tokens,
    text, finish reason and logits are those of `TextSession` alone with the same chunks."""
    seen = recording_logits(monkeypatch)
    prompts = [[0, 2, 3], _long(21, 1), _long(83, 2), [0, 5]]
    settings = [TextSettings(max_tokens=m, temperature=0.9, seed=i) for i, m in enumerate((40, 30, 12, 8))]
    alone = []
    for p, s in zip(prompts, settings):
        seen.clear()
        c = TextSession(loaded, batch=8).generate(p, s)
        alone.append((c, np.stack(next(iter(seen.values())))))
    seen.clear()
    tb = TextBatch(loaded, slots=3, prefill_batch=8)
    streams = [tb.stream(p, s) for p, s in zip(prompts[:2], settings)]
    for _ in range(4):  # the first two decode before the others come
        tb.step()
    streams += [tb.stream(p, s) for p, s in zip(prompts[2:], settings[2:])]
    texts = ["".join(pieces) for pieces in read_in_turns(streams)]
    assert tb.shared_chunks >= 10  # the long prompt's chunks ran beside decoding sequences
    logits = list(seen.values())  # one Completer per sequence, in the order they joined
    for i, (c, want) in enumerate(alone):
        got = streams[i].last
        assert (got.ids, got.text, got.finish_reason, got.prompt_tokens) == (
            c.ids,
            c.text,
            c.finish_reason,
            c.prompt_tokens,
        )
        assert texts[i] == c.text
        np.testing.assert_array_equal(np.stack(logits[i]), want)


def test_others_get_a_token_in_every_step_of_a_prompts_prefill(loaded):
    """While a prompt of 8 chunks is prefilled, each active sequence gets one token a step: the
    joiner's first token comes in the 8th step after it asked to join."""
    s = TextSettings(max_tokens=60, temperature=0.0, logit_bias={1: -np.inf})  # no end token
    tb = TextBatch(loaded, slots=3, prefill_batch=8)
    others = [tb.stream([0, 2, 3], s), tb.stream([0, 4], s)]
    tb.step()  # nobody decodes yet: both prompts run at once
    assert (tb.active, tb.waiting, tb.steps) == (2, 0, 1)
    joiner, shared = tb.stream(_long(64, 3), s), tb.shared_chunks
    made = [len(o.seq.completer.result.ids) for o in others]
    steps = 0
    while not joiner.seq.completer or not joiner.seq.completer.result.ids:
        tb.step()
        steps += 1
        assert [len(o.seq.completer.result.ids) for o in others] == [n + steps for n in made]
    assert steps == 8 and (tb.active, tb.waiting) == (3, 0)
    assert tb.shared_chunks - shared == 8


def test_a_lone_prompt_is_prefilled_in_one_step(loaded):
    """With no sequence decoding, a prompt's chunks all run in the step it joins."""
    tb = TextBatch(loaded, slots=2, prefill_batch=8)
    st = tb.stream(_long(50, 4), TextSettings(max_tokens=5, temperature=0.0))
    tb.step()
    assert (tb.active, tb.prompt_chunks, tb.shared_chunks, tb.steps) == (1, 7, 0, 1)
    assert "".join(st) == TextSession(loaded, batch=8).generate(_long(50, 4), st.seq.settings).text


def test_closing_a_prompt_being_prefilled_leaves_cleanly(loaded):
    s = TextSettings(max_tokens=30, temperature=0.0)
    tb = TextBatch(loaded, slots=2, prefill_batch=8)
    first = tb.stream([0, 2, 3], s)
    tb.step()
    joiner = tb.stream(_long(40, 5), s)
    tb.step()
    assert (tb.active, tb.waiting) == (1, 1)  # the joiner is being prefilled
    joiner.close()
    assert (tb.active, tb.waiting) == (1, 0)
    assert list(joiner) == []
    later = tb.stream(_long(20, 6), s)
    assert "".join(later) == TextSession(loaded, batch=8).generate(_long(20, 6), s).text
    for _ in first:
        pass
    assert first.last.ids == TextSession(loaded).generate([0, 2, 3], s).ids


def test_a_prompt_failing_in_a_later_chunk_ends_only_its_sequence(loaded):
    s = TextSettings(max_tokens=20, temperature=0.0)
    tb = TextBatch(loaded, slots=2, prefill_batch=8)
    ok = tb.stream([0, 2, 3], s)
    tb.step()
    bad = tb.stream(_long(30, 7) + [10**6], s)  # a token the vocabulary lacks, in its 4th chunk
    with pytest.raises(UsageError):
        next(bad)
    assert tb.waiting == 0
    assert ok.seq.completer is not None and 0 < len(ok.seq.completer.result.ids) < 20
    for _ in ok:
        pass
    assert ok.last.ids == TextSession(loaded).generate([0, 2, 3], s).ids


def test_lanes_taking_turns_hand_out_pieces_while_a_prompt_is_prefilled(loaded):
    """Driven as the server's worker drives lanes (``next`` on each in turn), a lane whose
    prompt of 8 chunks is prefilled yields ``None`` for 7 turns, one chunk each, and the other
    lanes hand out a piece in every one of those rounds; each gets what it gets alone."""
    s = TextSettings(max_tokens=40, temperature=0.0, logit_bias={1: -np.inf})
    tb = TextBatch(loaded, slots=3, prefill_batch=8)
    lanes = [tb.lane() for _ in range(3)]
    prompts = [[0, 2, 3], [0, 4], _long(64, 3)]
    its = [lanes[0].stream(prompts[0], s), lanes[1].stream(prompts[1], s)]
    got: list[list[str | None]] = [[next(it)] for it in its]  # the two decode
    its.append(lanes[2].stream(prompts[2], s))
    got.append([])
    rounds = []
    for _ in range(10):
        rounds.append([next(it) for it in its])
        for g, ev in zip(got, rounds[-1]):
            g.append(ev)
    assert [r[2] for r in rounds[:7]] == [None] * 7 and all(r[2] is not None for r in rounds[7:])
    assert all(isinstance(ev, str) for r in rounds for ev in r[:2])  # a piece each, every round
    for g, it in zip(got, its):
        g.extend(it)
    for lane, g, p in zip(lanes, got, prompts):
        want = TextSession(loaded, batch=8).generate(p, s)
        assert "".join(x for x in g if x is not None) == want.text and lane.last.ids == want.ids


def test_the_server_hands_out_other_requests_pieces_between_a_prompts_chunks(monkeypatch, tmp_path):
    """In the serving engine, a text request whose prompt takes two chunks (256 + 44 tokens)
    does not hold the worker for both: the two decoding requests get a piece in between."""
    from ccsm_core.server.engine import Engine, Ticket

    loaded = load_text_model(write_tiny_text(tmp_path / "t.gguf", "llama", seed=2, context=512), "numpy")
    log: list[str] = []
    put, feed_chunk = Ticket._put, TextSession.feed_chunk
    monkeypatch.setattr(Ticket, "_put", lambda self, item: (log.append(f"piece {self.id}"), put(self, item))[1])
    monkeypatch.setattr(
        TextSession, "feed_chunk", lambda self, chunk: (log.append(f"chunk {len(chunk)}"), feed_chunk(self, chunk))[1]
    )
    s = TextSettings(max_tokens=30, temperature=0.0, logit_bias={1: -np.inf})
    prompts = [[0, 2, 3], [0, 4, 5], _long(300, 8)]
    engine = Engine(text=loaded, max_active=3)
    tickets = [engine.submit("text", lambda lane, p=p: lane.stream(p, s)) for p in prompts]
    engine.start()  # all three are admitted in the worker's first round
    try:
        texts = ["".join(t) for t in tickets]
    finally:
        engine.stop()
    assert texts == [TextSession(loaded).generate(p, s).text for p in prompts]
    a, b = (f"piece {t.id}" for t in tickets[:2])
    between = log[log.index("chunk 256") + 1 : log.index("chunk 44")]
    assert a in between and b in between
