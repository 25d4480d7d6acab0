"""Property tests (Hypothesis), a fixed number of cases per fuzz target: mutated model and data
files (GGUF, safetensors, configs, audio, codes, voices), mutated text models (GGUF metadata,
transformers config.json) and tokenizer files (tokenizer.json, tokenizer_config.json and its chat
template, SentencePiece) load or fail with one `CcsmError`, within time and memory limits;
``ccsm run`` / ``generate`` / codec / ``inspect`` with hostile option values, texts and
config.toml defaults exit 0 or print one ``error: ... (hint: ...)`` line and exit 2, their
output files the complete new ones or the untouched old ones."""

from __future__ import annotations

import pytest

from ccsm_core.testing.fuzz.properties import check_target

EXAMPLES = {
    # model and data files
    "gguf-csm": 60,
    "safetensors": 200,
    "csm-config": 80,
    "mimi-config": 150,
    "wav": 150,
    "codes-npy": 200,
    "voice": 300,
    # text models and tokenizers
    "gguf-text": 100,
    "hf-config": 100,
    "tokenizer-json": 100,
    "tokenizer-config": 100,
    "sentencepiece": 200,
    # command lines
    "cli-run": 25,
    "cli-generate": 100,
    "config-toml": 40,
    "cli-codec": 30,
    "cli-inspect": 100,
}


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("fuzz-seeds")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_mutated_inputs_load_run_or_fail_cleanly(name, seeds_root, tmp_path):
    outcomes = check_target(name, seeds_root, tmp_path, EXAMPLES[name])
    assert len(outcomes) == EXAMPLES[name]
    assert {o.kind for o in outcomes} <= {"ok", "error"}
