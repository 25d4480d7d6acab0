"""The fuzz harness itself: each way a case can fail is told apart (a traceback, a `CcsmError`
without a hint, a hang, a runaway allocation, a broken output file), and a proper `CcsmError`
is not a failure."""

from __future__ import annotations

import time

import numpy as np
import pytest

from ccsm_core.errors import CcsmError, FormatError
from ccsm_core.testing.fuzz import Case, Target
from ccsm_core.testing.fuzz.command_line import check_result, old_outputs, output_case, snapshot
from ccsm_core.testing.fuzz.execute import execute
from ccsm_core.testing.fuzz.mutate import deep, dumps


def outcome_of(run, tmp_path, **kw):
    target = Target("probe", "files", "a probe", lambda seeds: None, run)
    return execute(target, Case({"x.bin": b"abc"}), tmp_path / "case", **kw)


def test_a_ccsm_error_with_a_hint_is_a_clean_refusal(tmp_path):
    def run(folder):
        raise FormatError(f"{folder / 'x.bin'} is broken", "restore it")

    assert outcome_of(run, tmp_path).kind == "error"


def test_a_traceback_names_the_exception(tmp_path):
    def run(folder):
        {}["missing"]

    o = outcome_of(run, tmp_path)
    assert o.failed and o.kind == "traceback" and o.detail.startswith("KeyError") and "KeyError" in o.trace


def test_an_error_without_a_hint_is_a_message_failure(tmp_path):
    def run(folder):
        raise FormatError("broken", "")

    assert outcome_of(run, tmp_path).kind == "message"


def test_a_case_past_its_time_is_a_hang(tmp_path):
    def run(folder):
        time.sleep(5)

    start = time.monotonic()
    assert outcome_of(run, tmp_path, in_process_limits=0.3).kind == "hang"
    assert time.monotonic() - start < 3


def test_a_runaway_allocation_is_a_memory_failure(tmp_path):
    def run(folder):
        np.ones(3 << 30, np.uint8)  # 3 GiB, beyond 1 GiB + 2x the 3-byte input

    assert outcome_of(run, tmp_path, in_process_limits=10).kind == "memory"


def test_outputs_must_be_old_after_a_failure_and_complete_after_a_success(tmp_path):
    class Result:
        exception = None
        exc_info = None

        def __init__(self, code, stderr=""):
            self.exit_code, self.stderr = code, stderr

    def check(result, out: str, write: bytes | None = None, replace_link: bool = False):
        folder = output_case({}, {}, ("run", "-o", out)).write(tmp_path / "case")
        before = {out: snapshot(folder, out)}
        if replace_link:
            (folder / out).unlink()
        if write is not None:
            (folder / out).write_bytes(write)
        check_result(folder, result, before)

    refused = Result(2, "note: demo\nerror: bad value (hint: fix it)\n")
    wav = old_outputs()["out.wav"]
    with pytest.raises(CcsmError):  # a clean refusal
        check(refused, "out.wav")
    with pytest.raises(AssertionError, match="changed although the run failed"):
        check(refused, "out.wav", b"RIFF")
    with pytest.raises(AssertionError, match="not a complete file"):
        check(Result(0), "out.wav", b"RIFF\0\0\0\0WAVE")
    with pytest.raises(AssertionError, match="not written although the run succeeded"):
        check(Result(0), "new.wav")
    with pytest.raises(AssertionError, match="replaced it by a file"):
        check(Result(0), "link.wav", wav, replace_link=True)
    with pytest.raises(AssertionError, match="without one 'error"):
        check(Result(2, "Usage: ccsm run\nError: no\n"), "out.wav")
    check(Result(0), "link.wav", wav)  # written through the link: fine


def test_structured_json_keeps_raw_pieces_verbatim():
    text = dumps({"a": [1, deep("list", 3)], "n": float("nan")})
    assert text == '{"a":[1,[[[]]]],"n":NaN}'
