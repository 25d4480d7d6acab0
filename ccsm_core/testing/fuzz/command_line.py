"""The ``ccsm`` command line, in process (click's runner): numeric and text options given
hostile values (``run`` on the demo model, ``generate`` on a tiny text GGUF), ``config.toml``
files of hostile defaults, ``encode``/``decode`` of hostile audio and codes; outputs that exist
(files, links), are missing, in missing folders, FIFOs or folders. Every run must exit 0 or
print one ``error: ... (hint: ...)`` line and exit 2, and every output file must be the complete
new one or the untouched old one."""

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
TEXTS = ["Hi.", "Hi.", "Hi.", "Hi.", "Hi.", "Hi\udcff.", "", " ", "\x00", "a" * 600]
GENERATE_TEXTS = ["ab cd", "ab cd", "ab cd", "ab\udcff", "", " ", "\x00", "abcd " * 150]  # in the tiny vocabulary
ODD_PATHS = ["fifo", "/dev/zero", "/proc/self/mem", "real", "missing.gguf", ""]  # as --model
VALID = ["0", "1", "0.5", "0.9", "3", "100", "400", "8000"]
AUDIO_OUTPUTS = ["out.wav", "out.wav", "new.wav", "link.wav", "missing/out.wav", "pipe.wav", "dir.wav", "out.mp3"]
CODES_OUTPUTS = ["codes.npy", "codes.bin", "link.npy", "missing/codes.npy", "pipe.npy"]
OUTPUT_FLAGS = st.one_of(
    st.just(()),
    st.sampled_from([("--stream",), ("--pcm16",), ("--srt", "out.srt"), ("--srt", "missing/out.srt")]),
    st.sampled_from(CODES_OUTPUTS).map(lambda name: ("--codes-out", name)),
)
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

    wav, codes = wav_bytes(seconds=0.02), npy_bytes(np.zeros((1, 32), np.int64))
    return {
        "out.wav": wav,
        "codes.npy": codes,
        "codes.bin": codes,
        "out.srt": b"1\n00:00:00,000 --> 00:00:01,000\nold\n",
        "real/target.wav": wav,
        "real/target.npy": codes,
    }


def output_case(files: dict[str, bytes], links: dict[str, Path], args: tuple[str, ...]) -> Case:
    """A case with the old outputs in place: files, ``link.wav``/``link.npy`` (symbolic links
    into ``real/``), FIFOs ``fifo``, ``pipe.wav``, ``pipe.npy`` and a folder ``dir.wav``."""
    links = links | {"link.wav": Path("real/target.wav"), "link.npy": Path("real/target.npy")}
    files = old_outputs() | {"dir.wav/keep": b""} | files
    return Case(files, links, args, fifos=("fifo", "pipe.wav", "pipe.npy"))


def _options(names: list[str]) -> st.SearchStrategy[list[str]]:
    values = st.one_of(st.sampled_from(VALID), st.sampled_from(NUMBERS), st.floats().map(repr))
    pair = st.tuples(st.sampled_from(names), values)
    return st.lists(pair, min_size=1, max_size=3).map(lambda pairs: [x for p in pairs for x in p])


def _run_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    base = ["run", "--max-audio-ms", "240", "--no-progress"]
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
        lambda model, text, opts, out, flags: output_case(
            {"ctx.wav": wav_bytes(seconds=0.1)}, {}, (*base, "--model", model, "-o", out, *flags, *opts, "--", text)
        ),
        st.sampled_from(["demo"] * 12 + ODD_PATHS),
        st.sampled_from(TEXTS),
        st.one_of(st.just([]), st.lists(extra, min_size=1, max_size=2).map(lambda xs: [x for o in xs for x in o])),
        st.sampled_from(AUDIO_OUTPUTS),
        OUTPUT_FLAGS,
    )


def _generate_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    base = ["generate", "-n", "3"]
    extra = st.one_of(
        _options(GENERATE_OPTIONS),
        st.sampled_from(LOGIT_BIAS).map(lambda v: ["--logit-bias", v]),
        st.sampled_from(STOPS).map(lambda v: ["--stop", v]),
    )
    return st.builds(
        lambda model, text, opts: Case(
            {}, {"model.gguf": seeds.text_gguf}, args=(*base, "--model", model, *opts, "--", text), fifos=("fifo",)
        ),
        # not "": an empty --model is the bundled SmolLM2, whose -n 8000 takes minutes, not a hang
        st.sampled_from(["model.gguf"] * 8 + [p for p in ODD_PATHS if p]),
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
        lambda t: output_case({"config.toml": t.encode("utf-8", "surrogateescape")}, {}, args)
    )


def _codec_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    from .media import codes_files, wav_files

    model = ["--model", "demo"]
    encode = st.builds(
        lambda audio, out: output_case({"in.wav": audio}, {}, ("encode", "in.wav", "-o", out, *model)),
        st.one_of(st.just(seeds.wav), wav_files(seeds.wav)),
        st.sampled_from([*CODES_OUTPUTS, "new.npy"]),
    )
    rate = st.one_of(st.just(()), st.sampled_from(NUMBERS + VALID).map(lambda v: ("--sample-rate", v)))
    decode = st.builds(
        lambda codes, out, extra: output_case({"in.npy": codes}, {}, ("decode", "in.npy", "-o", out, *model, *extra)),
        st.one_of(st.just(seeds.codes), codes_files(seeds.codes)),
        st.sampled_from(AUDIO_OUTPUTS),
        rate,
    )
    return st.one_of(encode, decode)


def _inspect_cases(seeds: Seeds) -> st.SearchStrategy[Case]:
    from .gguf import gguf_cases

    files = gguf_cases(seeds.text_gguf).map(lambda case: case.files["model.gguf"])
    flags = st.sampled_from([(), ("--json",)])
    return st.one_of(
        st.builds(lambda data, f: Case({"model.gguf": data}, args=("inspect", "model.gguf", *f)), files, flags),
        st.builds(
            lambda path, f: Case({}, args=("inspect", path, *f), fifos=("fifo",)), st.sampled_from(ODD_PATHS), flags
        ),
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


OUTPUT_OPTIONS = ("-o", "--output", "--codes-out", "--srt", "--vtt")
Snapshot = tuple[Any, ...]


def output_paths(args: list[str]) -> list[str]:
    """The files a command line names as outputs (stdout ``-`` aside)."""
    return [b for a, b in zip(args, args[1:]) if a in OUTPUT_OPTIONS and b != "-"]


def snapshot(folder: Path, name: str) -> Snapshot:
    """What ``name`` is: absent, a file and its bytes, a link and its target's state, a FIFO, a folder."""
    path = folder / name
    if path.is_symlink():
        return ("link", os.readlink(path), snapshot(path.parent, os.readlink(path)))
    if path.is_fifo():
        return ("fifo",)
    if path.is_dir():
        return ("folder",)
    if path.is_file():
        return ("file", path.read_bytes())
    return ("absent",)


def check_result(folder: Path, result: Any, before: dict[str, Snapshot]) -> None:
    """Raise the traceback a run ended with; a `Violation` for a malformed error or an output
    that is neither the complete new file (success) nor the untouched old one (failure); else
    `Refused` for a clean ``error:`` line with exit 2."""
    exc = result.exception
    if exc is not None and not isinstance(exc, SystemExit):
        raise exc.with_traceback(result.exc_info[2] if result.exc_info else None)
    code, stderr = result.exit_code, result.stderr
    errors = [ln for ln in stderr.splitlines() if ln.startswith("error: ")]
    if code == 2 and (len(errors) != 1 or "(hint: " not in errors[0] or "Traceback" in stderr):
        raise Violation("message", f"exit 2 without one 'error: ... (hint: ...)' line: {stderr[-300:]!r}")
    if code not in (0, 2):
        raise Violation("message", f"exit {code}: {stderr[-300:]!r}")
    leftovers = [str(p.relative_to(folder)) for p in folder.rglob("*") if re.search(r"\.tmp(\.|$)", p.name)]
    if leftovers:
        raise Violation("output", f"temporary files left behind: {leftovers}")
    for name, old in before.items():
        now = snapshot(folder, name)
        if code == 2 and now != old:
            raise Violation("output", f"{name} changed although the run failed: {_show(old)} -> {_show(now)}")
        if code == 0:
            _check_written(folder, name, old, now)
    if code == 2:
        cause, _, hint = errors[0].removeprefix("error: ").rpartition(" (hint: ")
        raise Refused(cause, hint.removesuffix(")"))


def _show(state: Snapshot) -> str:
    if state[0] == "file":
        return f"a file of {len(state[1])} bytes"
    if state[0] == "link":
        return f"a link to {state[1]} ({_show(state[2])})"
    return f"{'a' if state[0] != 'absent' else ''} {state[0]}".strip()


def _check_written(folder: Path, name: str, old: Snapshot, now: Snapshot) -> None:
    """After a success: a file or link written whole; a link still a link; a FIFO or folder kept."""
    if old[0] in ("fifo", "folder"):
        if now != old:
            raise Violation("output", f"{name} was {_show(old)}, the run made it {_show(now)}")
        return
    if old[0] == "link":
        if now[0] != "link" or now[1] != old[1]:
            raise Violation("output", f"{name} was {_show(old)}, the run replaced it by {_show(now)}")
        target = os.path.join(os.path.dirname(name), old[1])
        return _check_written(folder, target, old[2], now[2])
    if now[0] != "file":
        raise Violation("output", f"{name} not written although the run succeeded ({_show(now)})")
    _complete(folder / name)


def _complete(path: Path) -> None:
    import numpy as np
    import soundfile as sf

    try:
        if path.suffix in (".wav", ".flac", ".ogg"):
            info = sf.info(str(path))
            if info.frames <= 0 or not math.isfinite(info.duration):
                raise ValueError("no frames")
            sf.read(str(path))
        elif path.suffix == ".npy" or "codes" in path.name:
            np.load(path, allow_pickle=False)
        elif not path.read_bytes():
            raise ValueError("empty")
    except Exception as e:  # noqa: BLE001 - any unreadable output is the violation
        raise Violation("output", f"{path.name} is not a complete file: {type(e).__name__}: {e}") from None


def _run_cli(folder: Path) -> None:
    args = case_args(folder)
    before = {name: snapshot(folder, name) for name in output_paths(args)}
    check_result(folder, invoke(folder, args), before)


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
    Target("cli-inspect", "cli", "ccsm inspect of mutated GGUF files, FIFOs, devices", _inspect_cases, _run_cli),
    Target("cli-codec", "cli", "ccsm encode/decode (demo Mimi): hostile audio, codes, outputs", _codec_cases, _run_cli),
]
