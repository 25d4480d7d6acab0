"""Property tests (Hypothesis): mutated text models (GGUF metadata, transformers config.json)
and tokenizer files (tokenizer.json, tokenizer_config.json and its chat template, SentencePiece)
load or fail with one `CcsmError`, within time and memory limits."""

from __future__ import annotations

import pytest

from ccsm_core.testing.fuzz.properties import check_target

EXAMPLES = {
    "gguf-text": 100,
    "hf-config": 100,
    "tokenizer-json": 100,
    "tokenizer-config": 100,
    "sentencepiece": 200,
}


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("fuzz-seeds")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_mutated_text_models_load_or_fail_cleanly(name, seeds_root, tmp_path):
    outcomes = check_target(name, seeds_root, tmp_path, EXAMPLES[name])
    assert len(outcomes) == EXAMPLES[name]
    assert {o.kind for o in outcomes} <= {"ok", "error"}
