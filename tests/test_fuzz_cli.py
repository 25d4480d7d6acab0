"""Property tests (Hypothesis): ``ccsm run`` and ``ccsm generate`` with hostile option values,
texts and config.toml defaults exit 0 or print one ``error: ... (hint: ...)`` line and exit 2;
their output files are the complete new ones or the untouched old ones."""

from __future__ import annotations

import pytest

from ccsm_core.testing.fuzz.properties import check_target

EXAMPLES = {"cli-run": 25, "cli-generate": 100, "config-toml": 40, "cli-codec": 30, "cli-inspect": 100}


@pytest.fixture(scope="module")
def seeds_root(tmp_path_factory: pytest.TempPathFactory):
    return tmp_path_factory.mktemp("fuzz-seeds")


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_hostile_command_lines_exit_cleanly(name, seeds_root, tmp_path):
    outcomes = check_target(name, seeds_root, tmp_path, EXAMPLES[name])
    assert len(outcomes) == EXAMPLES[name]
    assert {o.kind for o in outcomes} <= {"ok", "error"}
