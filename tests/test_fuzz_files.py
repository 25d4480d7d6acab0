"""Property tests (Hypothesis): mutated model and data files (GGUF, safetensors, configs, audio,
codes, voices) load or fail with one `CcsmError`, within time and memory limits."""

from __future__ import annotations

import pytest

from ccsm_core.testing.fuzz.properties import check_target

EXAMPLES = {
    "gguf-csm": 60,
    "safetensors": 200,
    "csm-config": 80,
    "mimi-config": 150,
    "wav": 150,
    "codes-npy": 200,
    "voice": 300,
}


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("fuzz-seeds")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_mutated_files_load_or_fail_cleanly(name, seeds_root, tmp_path):
    outcomes = check_target(name, seeds_root, tmp_path, EXAMPLES[name])
    assert len(outcomes) == EXAMPLES[name]
    assert {o.kind for o in outcomes} <= {"ok", "error"}
