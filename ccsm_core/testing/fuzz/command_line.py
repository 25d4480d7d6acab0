"""The ``ccsm`` command line, in process (click's runner): numeric and text options given
hostile values (``run`` on the demo model, ``generate`` on a tiny text GGUF) and ``config.toml``
files of hostile defaults. Every run must exit 0 or print one ``error: ... (hint: ...)`` line
and exit 2, and every output file must be the complete new one or the untouched old one."""

from __future__ import annotations

import functools
import math
import os
import re
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from ...errors import UsageError
from .case import Case, case_args
from .seeds import Seeds, npy_bytes, wav_bytes
from .target import Target, Violation

NUMBERS = [
    "-1", "0", "1", "0.5", "3", "80", "1e400", "-1e400", "inf", "-inf", "nan", "1e-300", "-0", "2147483648",
    "4294967296", "18446744073709551616", "-9223372036854775809", "1e12", "0x10", "1_0", "", "abc", " 3", "３",
    "1e308", "\udcff", "9" * 5000,
]  # fmt: skip
RUN_OPTIONS = [
    "--max-audio-ms", "--temperature", "--topk", "--top-p", "--min-p", "--repetition-penalty",
    "--frequency-penalty", "--presence-penalty", "--seed", "--pause-ms", "--retries", "--history",
    "--min-frames", "--sample-rate", "--threads", "--speaker", "--parallel-sentences",
]  # fmt: skip
GENERATE_OPTIONS = [
    "-n", "--temperature", "--top-k", "--top-p", "--min-p", "--repetition-penalty", "--frequency-penalty",
    "--presence-penalty", "--seed", "--threads",
]  # fmt: skip
LOGIT_BIAS = [
    "0=1e400",
    "0=-inf",
    "0=nan",
    "99999=1",
    "-1=1",
    "x=1",
    "=",
    "2050=inf",
    "1=-1e308",
    "18446744073709551616=1",
]
STOPS = ["\\x", "\\u12", "\\", "", "\\n", "\\N{nope}", "\udcff"]
TEXTS = ["Hi.", "Hi.", "Hi.", "Hi\udcff.", "", " ", "\x00", "a" * 600]
GENERATE_TEXTS = ["ab cd", "ab cd", "ab cd", "ab\udcff", "", " ", "\x00", "abcd " * 150]  # in the tiny vocabulary
VALID = ["0", "1", "0.5", "0.9", "3", "100", "400", "8000"]
OUTPUT_FLAGS = [(), ("--stream",), ("--codes-out", "codes.npy"), ("--srt", "out.srt"), ("--pcm16",)]
OUTPUT_NAMES = ("out.wav", "codes.npy", "out.srt")
TOML_VALUES = [
    "inf", "-inf", "nan", "-1", "0", "1e400", "9223372036854775807", "-9223372036854775808", "1e-300", '"abc"', '""',
    '"1e400"', "[1, 2]", "{a = 1}", "1979-05-27T07:32:00Z", "1979-05-27", "07:32:00", "true", "0.5", "3",
    '"/proc/self/mem"', '"/dev/zero"', '"fifo"', '"."', '"missing/out.wav"',
]  # fmt: skip
TOML_KEYS = [
    *(o.lstrip("-") for o in RUN_OPTIONS),
    "model",
    "output",
    "voice",
    "tokenizer",
    "mimi",
    "backend",
    "text-file",
]


class Refused(UsageError):
    """The command refused the case properly: one ``error: CAUSE (hint: HINT)`` line, exit 2."""


@functools.cache
def old_outputs() -> dict[str, bytes]:
    """What the output files hold before a run (a run that fails must leave them so)."""
    import numpy as np

    return {
        "out.wav": wav_bytes(seconds=0.02),
        "codes.npy": npy_bytes(np.zeros((1, 32), np.int64)),
        "out.srt": b"1\n00:00:00,000 --> 00:00:01,000\nold\n",
    }


def _options(names: list[str]) -> st.SearchStrategy[list[str]]:
    values = st.one_of(st.sampled_from(VALID), st.sampled_from(NUMBERS), st.floats().map(repr))
    pair = st.tuples(st.sampled_from(names), values)
    return st.lists(pair, min_size=1, max_size=3).map(lambda pairs: [x for p in pairs for x in p])


def _run_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    base = ["run", "--model", "demo", "-o", "out.wav", "--max-audio-ms", "240", "--no-progress"]
    extra = st.one_of(
        _options(RUN_OPTIONS),
        st.sampled_from(LOGIT_BIAS).map(lambda v: ["--logit-bias", v]),
        st.tuples(
            st.sampled_from(["--context"]),
            st.sampled_from(["0", "-1", "1e400"]),
            st.just("Hello."),
            st.sampled_from(["ctx.wav", "fifo", "missing.wav", "/dev/zero", "."]),
        ).map(list),
    )
    return st.builds(
        lambda text, opts, flags: Case(
            old_outputs() | {"ctx.wav": wav_bytes(seconds=0.1)},
            args=(*base, *flags, *opts, "--", text),
            fifos=("fifo",),
        ),
        st.sampled_from(TEXTS),
        st.lists(extra, max_size=2).map(lambda xs: [x for o in xs for x in o]),
        st.sampled_from(OUTPUT_FLAGS),
    )


def _generate_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    base = ["generate", "--model", "model.gguf", "-n", "3"]
    extra = st.one_of(
        _options(GENERATE_OPTIONS),
        st.sampled_from(LOGIT_BIAS).map(lambda v: ["--logit-bias", v]),
        st.sampled_from(STOPS).map(lambda v: ["--stop", v]),
    )
    return st.builds(
        lambda text, opts: Case({}, {"model.gguf": seeds.text_gguf}, args=(*base, *opts, "--", text)),
        st.sampled_from(GENERATE_TEXTS),
        st.lists(extra, max_size=2).map(lambda xs: [x for o in xs for x in o]),
    )


def _toml_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    value = st.one_of(st.sampled_from(VALID), st.sampled_from(TOML_VALUES))
    line = st.tuples(st.sampled_from(TOML_KEYS), value).map(lambda kv: f"{kv[0]} = {kv[1]}")
    text = st.lists(line, min_size=1, max_size=3, unique_by=lambda s: s.split(" ", 1)[0]).map(
        lambda lines: "[run]\n" + "\n".join(lines) + "\n"
    )
    broken = st.sampled_from(["[run\n", "[run]\nx = \n", "\xff\xfe", "run = 3\n", "[run]\nseed = 1\nseed = 2\n"])
    args = ("--config", "config.toml", "run", "--model", "demo", "-o", "out.wav", "--max-audio-ms", "160", "Hi.")
    return st.one_of(text, text, broken).map(
        lambda t: Case(
            old_outputs() | {"config.toml": t.encode("utf-8", "surrogateescape")}, args=args, fifos=("fifo",)
        )
    )


def invoke(folder: Path, args: list[str]) -> Any:
    """Run ``ccsm ARGS`` in ``folder`` (click's runner), outputs written there."""
    from click.testing import CliRunner

    from ...cli import cli

    cwd = os.getcwd()
    os.chdir(folder)
    try:
        return CliRunner().invoke(cli, args, catch_exceptions=True, prog_name="ccsm")
    finally:
        os.chdir(cwd)


def check_result(folder: Path, result: Any) -> None:
    """Raise the traceback a run ended with, else a `Violation` for a broken promise."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise exc.with_traceback(result.exc_info[2] if result.exc_info else None)
    code = result.exit_code
    stderr = result.stderr
    if code == 2:
        lines = [ln for ln in stderr.splitlines() if ln.strip()]
        errors = [ln for ln in lines if ln.startswith("error: ")]
        if len(errors) != 1 or "(hint: " not in errors[0] or "Traceback" in stderr:
            raise Violation("message", f"exit 2 without one 'error: ... (hint: ...)' line: {stderr[-300:]!r}")
        _check_outputs(folder, False)
        cause, _, hint = errors[0].removeprefix("error: ").rpartition(" (hint: ")
        raise Refused(cause, hint.removesuffix(")"))
    if code != 0:
        raise Violation("message", f"exit {code}: {stderr[-300:]!r}")
    _check_outputs(folder, True)


def _check_outputs(folder: Path, ok: bool) -> None:
    args = case_args(folder)
    leftovers = [p.name for p in folder.iterdir() if re.search(r"\.tmp(\.|$)|\.tmp[^/]*$", p.name)]
    if leftovers:
        raise Violation("output", f"temporary files left behind: {leftovers}")
    written = {a for a in args if a in OUTPUT_NAMES}
    for name, old in old_outputs().items():
        path = folder / name
        if name not in written:
            continue
        data = path.read_bytes() if path.is_file() else None
        if not ok and data != old:
            raise Violation(
                "output", f"{name} changed although the run failed ({None if data is None else len(data)} bytes)"
            )
        if ok and data is not None and data != old:
            _complete(path)
        if ok and data == old and name != "out.srt":
            raise Violation("output", f"{name} not written although the run succeeded")


def _complete(path: Path) -> None:
    import numpy as np
    import soundfile as sf

    try:
        if path.suffix == ".wav":
            info = sf.info(str(path))
            if info.frames <= 0 or not math.isfinite(info.duration):
                raise ValueError("no frames")
            sf.read(str(path))
        elif path.suffix == ".npy":
            np.load(path, allow_pickle=False)
    except Exception as e:  # noqa: BLE001 - any unreadable output is the violation
        raise Violation("output", f"{path.name} is not a complete file: {type(e).__name__}: {e}") from None


def _run_cli(folder: Path) -> None:
    check_result(folder, invoke(folder, case_args(folder)))


TARGETS = [
    Target("cli-run", "cli", "ccsm run (demo model): numeric options, texts, outputs", _run_cases, _run_cli),
    Target(
        "cli-generate",
        "cli",
        "ccsm generate (tiny GGUF): numeric options, --stop, --logit-bias",
        _generate_cases,
        _run_cli,
    ),
    Target("config-toml", "cli", "config.toml [run] defaults: ccsm --config FILE run", _toml_cases, _run_cli),
]
