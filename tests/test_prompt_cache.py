"""PromptCache: which rows are reused, restored or computed, and the saved prefixes' memory bound."""

from __future__ import annotations

import numpy as np

from ccsm_core.generator import GenerationSettings, Generator, Segment
from ccsm_core.loading.csm import load_csm

from .test_csm_parity import FIXTURE


def gen_and_turns():
    lm = load_csm(FIXTURE, "numpy")
    codes = np.load(FIXTURE / "reference.npz")["ctx_frames"].T
    voice = [Segment(1, "A voice prompt.", codes=codes)]
    other = [Segment(0, "Another.", codes=codes[:, :3])]
    return Generator(lm.model, lm.tokenizer), voice, other


def rows(gen, segs):
    return sum(len(gen.turn_rows(s)[0]) for s in segs)


def test_rows_reused_restored_and_computed():
    gen, voice, other = gen_and_turns()
    s = GenerationSettings(max_audio_ms=160, temperature=0)
    cache = gen.prompt_cache
    target = len(gen.text_rows(1, "Hi.")[0])
    gen.generate("Hi.", 1, (), s, voice=voice)
    assert (cache.last.reused, cache.last.restored, cache.last.computed) == (0, 0, rows(gen, voice) + target)
    gen.generate("Hello.", 1, (), s, voice=voice)  # a new text after the same voice
    assert cache.last.reused == rows(gen, voice) and cache.last.computed == len(gen.text_rows(1, "Hello.")[0])
    gen.generate("Hello.", 1, (), s, voice=voice)  # the same prompt again: nothing computed
    assert cache.last.computed == 0
    gen.generate("Hi.", 0, (), s, voice=other)
    gen.generate("Hi.", 1, other, s, voice=voice)  # voice restored, then the context turn computed
    assert cache.last.restored == rows(gen, voice) and cache.last.computed == rows(gen, other) + target
    # a traced run computes every row
    gen.generate("Hi.", 1, (), s, voice=voice, trace=lambda *_: None)
    assert cache.last.reused == cache.last.restored == 0


def test_saved_prefixes_stay_within_their_memory_bound():
    gen, voice, other = gen_and_turns()
    s = GenerationSettings(max_audio_ms=80, temperature=0)
    gen.generate("Hi.", 1, (), s, voice=voice)
    one = next(iter(gen.prompt_cache.saved.values())).nbytes
    gen.prompt_cache.max_bytes = one + 1  # room for one saved prefix
    gen.generate("Hi.", 0, (), s, voice=other)
    assert len(gen.prompt_cache.saved) == 1
    assert sum(e.nbytes for e in gen.prompt_cache.saved.values()) <= gen.prompt_cache.max_bytes
