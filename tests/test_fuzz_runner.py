"""``make fuzz``'s runner: worker processes, and every way a case fails told apart — a native
crash (a signal), a hang (past the time limit), memory past the limit, a traceback — with the
failing input kept for replay, and exit status 1."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest


def run_fuzz(tmp_path, words: str, cases: int, *extra: str) -> subprocess.CompletedProcess:
    env = os.environ | {"CCSM_FUZZ_PROBE": words}
    cmd = [sys.executable, "-m", "ccsm_core.testing.fuzz", "--targets", "probe", "--out", str(tmp_path)]
    cmd += ["--cases", str(cases), "--jobs", "2", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def test_clean_cases_pass(tmp_path):
    done = run_fuzz(tmp_path, "ok,error", 20)
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = json.loads((tmp_path / "summary.json").read_text())["probe"]["kinds"]
    assert kinds["ok"] + kinds["error"] == 20


@pytest.mark.parametrize(
    ("word", "kind", "detail"),
    [
        ("raise", "traceback", "ValueError: word.txt says raise"),
        ("abort", "crash", "SIGABRT"),
        ("hang", "hang", "no result after 1 s"),  # the time limit is 1 s in this test
        ("grow", "memory", "limit 1024 MiB"),
    ],
)
def test_each_failure_is_told_apart_and_kept(tmp_path, word, kind, detail):
    done = run_fuzz(tmp_path, word, 2, "--timeout", "1" if word == "hang" else "20")
    assert done.returncode == 1, done.stdout + done.stderr
    summary = json.loads((tmp_path / "summary.json").read_text())["probe"]
    assert summary["cases"] == 2 and summary["kinds"] == {kind: 2}
    assert detail in summary["failures"][0]["detail"]
    kept = sorted((tmp_path / "probe").iterdir())
    assert kept and all(p.name.startswith(kind) and (p / "word.txt").read_text() == word for p in kept)


def test_a_kept_case_replays(tmp_path):
    run_fuzz(tmp_path, "raise", 1)
    (kept,) = (tmp_path / "probe").iterdir()
    replay = subprocess.run(
        [sys.executable, "-m", "ccsm_core.testing.fuzz", "--replay", str(kept)],
        env=os.environ | {"CCSM_FUZZ_PROBE": "1"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert replay.returncode == 1 and "ValueError: word.txt says raise" in replay.stdout
