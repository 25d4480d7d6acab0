"""Hostile command lines: every error is one line ``error: <cause> (hint: <fix>)`` and exit 2 —
click's usage errors, bad numbers, bad escapes, non-UTF-8 arguments, config.toml values of the
wrong type, FIFOs and devices where a file is expected — and every error raised carries a hint."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import click
import pytest

from ccsm_core import limits
from ccsm_core.cli import cli

ROOT = Path(__file__).resolve().parents[1]
CCSM = [sys.executable, "-c", "from ccsm_core.cli import main; main()"]
TEXT_GGUF = ROOT / "tests" / "fixtures" / "text-archs" / "llama.gguf"


def one_error_line(res: click.testing.Result, needle: str = "") -> str:
    """The single stderr line of a failed command; fails unless it is ``error: ... (hint: ...)``."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert "Traceback" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1, res.stderr
    line = lines[0]
    assert line.startswith("error: ") and "(hint: " in line and line.endswith(")"), line
    assert needle in line, (needle, line)
    return line


def command_tree(
    group: click.Group = cli, path: tuple[str, ...] = ()
) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    """Every command of the CLI (plugin commands included) with its path of names."""
    ctx = click.Context(group)
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        assert cmd is not None
        yield (*path, name), cmd
        if isinstance(cmd, click.Group):
            yield from command_tree(cmd, (*path, name))


COMMANDS = list(command_tree())


# --- click's own usage errors ---------------------------------------------------------------


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=" ".join)
def test_unknown_option_is_one_line_everywhere(cli_runner, path):
    res = cli_runner.invoke(cli, [*path, "--no-such-option-here"], prog_name="ccsm")
    line = one_error_line(res, "no such option")
    assert f"see 'ccsm {' '.join(path)} --help'" in line


@pytest.mark.parametrize(
    "path",
    [p for p, c in COMMANDS if any(isinstance(x, click.Argument) and x.required for x in c.params)],
    ids=" ".join,
)
def test_missing_argument_is_one_line_everywhere(cli_runner, path):
    one_error_line(cli_runner.invoke(cli, list(path)), "missing argument")


@pytest.mark.parametrize(
    "path,option",
    [
        (p, o.opts[-1])
        for p, c in COMMANDS
        for o in c.params
        if isinstance(o, click.Option) and isinstance(o.type, click.Choice) and not o.multiple
    ],
    ids=str,
)
def test_bad_choice_is_one_line_everywhere(cli_runner, path, option):
    one_error_line(cli_runner.invoke(cli, [*path, option, "no-such-choice"]), "invalid value")


def test_unknown_command_and_bad_int(cli_runner):
    one_error_line(cli_runner.invoke(cli, ["nosuch"]), "no such command")
    one_error_line(cli_runner.invoke(cli, ["run", "hi", "--threads", "many"]), "--threads")
    one_error_line(cli_runner.invoke(cli, ["voice", "add", "x", "--speaker", "one"]), "--speaker")


# --- numbers ---------------------------------------------------------------------------------


NUMERIC = [
    (p, o)
    for p, c in COMMANDS
    for o in c.params
    if isinstance(o.type, (click.types.FloatParamType, click.types.IntParamType))
]


@pytest.mark.parametrize("path,option", NUMERIC, ids=lambda x: " ".join(x) if isinstance(x, tuple) else x.name)
@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "1e400", "-1e400"])
def test_every_numeric_option_refuses_non_finite_numbers(path, option, value):
    with pytest.raises(click.BadParameter):
        option.type.convert(value, option, None)


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "hi", "--seed", "-1"], "--seed"),
        (["run", "hi", "--seed", str(2**63)], "--seed"),
        (["run", "hi", "--max-audio-ms", "inf"], "--max-audio-ms"),
        (["run", "hi", "--max-audio-ms", "1e12"], "--max-audio-ms"),
        (["run", "hi", "--max-audio-ms", "nan"], "--max-audio-ms"),
        (["run", "hi", "--logit-bias", "0=1e400"], "--logit-bias"),
        (["run", "hi", "--logit-bias", "0=nan"], "--logit-bias"),
        (["run", "hi", "--logit-bias", "-3=1"], "--logit-bias"),
        (["run", "hi", "--logit-bias", f"{2**64}=1"], "--logit-bias"),
        (["run", "hi", "--logit-bias", "1" * 5000 + "=1"], "--logit-bias"),
        (["run", "hi", "--repetition-penalty", "1e-300"], "--repetition-penalty"),
        (["run", "hi", "--temperature", "nan"], "--temperature"),
        (["run", "hi", "--temperature", "1e308"], "--temperature"),
        (["run", "hi", "--top-p", "nan"], "--top-p"),
        (["run", "hi", "--topk", str(2**70)], "--topk"),
        (["run", "hi", "--threads", "0"], "--threads"),
        (["run", "hi", "--pause-ms", "inf"], "--pause-ms"),
        (["run", "hi", "--min-frames", str(10**30)], "--min-frames"),
        (["run", "hi", "--speaker", str(10**30)], "--speaker"),
        (["generate", "hi", "--seed", "-1"], "--seed"),
        (["generate", "hi", "-n", str(10**30)], "--max-tokens"),
        (["generate", "hi", "--stop", "\\x"], "--stop"),
        (["generate", "hi", "--stop", "ab\\q"], "--stop"),
        (["generate", "hi", "--stop", "\\ud800"], "--stop"),
        (["generate", "hi", "--stop", ""], "--stop"),
        (["chat", "--stop", "\\"], "--stop"),
        (["serve", "--timeout", "inf"], "--timeout"),
    ],
)
def test_bad_numbers_and_escapes(cli_runner, args, needle):
    one_error_line(cli_runner.invoke(cli, args), needle)


def test_stop_escapes_are_decoded_and_non_ascii_kept():
    from ccsm_core.commands.common import unescape

    assert unescape("\\n\\n", "--stop") == "\n\n"
    assert unescape("a\\tb\\\\c\\x41\\u00e9", "--stop") == "a\tb\\cA\u00e9"
    assert unescape("naïve — ok", "--stop") == "naïve — ok"  # the old unicode_escape mangled these


def test_logit_bias_values():
    from ccsm_core.commands.common import parse_bias

    assert parse_bias(("5=-inf", "7=2.5")) == {5: float("-inf"), 7: 2.5}


def test_backend_options_keep_unparsable_values_as_text():
    from ccsm_core.commands.common import parse_kv

    assert parse_kv(("a=1", "b=NaN", "c=" + "9" * 5000, "d=x"), "--backend-option") == {
        "a": 1,
        "b": "NaN",
        "c": "9" * 5000,
        "d": "x",
    }


# --- text that is not UTF-8 ------------------------------------------------------------------


def test_non_utf8_argument_is_refused(cli_runner):
    res = cli_runner.invoke(cli, ["run", "caf\udce9", "--model", "demo"])  # argv's surrogateescape
    one_error_line(res, "not valid UTF-8")
    res = cli_runner.invoke(cli, ["inspect", "/tmp/\udcff.gguf"])
    one_error_line(res, "not valid UTF-8")


def test_non_utf8_argument_in_a_real_process(tmp_path):
    env = {**os.environ, "PYTHONUTF8": "0", "LC_ALL": "C.UTF-8"}
    res = subprocess.run(
        [*CCSM, "run", b"caf\xe9", "--model", "demo"],
        capture_output=True,
        env=env,
        cwd=tmp_path,
        timeout=60,
    )
    err = res.stderr.decode("utf-8", "replace")
    assert res.returncode == 2 and "Traceback" not in err, err
    assert err.startswith("error: ") and "not valid UTF-8" in err and "(hint: " in err


def test_non_utf8_environment_variable(cli_runner, monkeypatch):
    monkeypatch.setenv("CCSM_MODEL", "caf\udce9")
    one_error_line(cli_runner.invoke(cli, ["run", "hi"]), "$CCSM_MODEL")


def test_non_utf8_stdin_for_chat(cli_runner):
    res = cli_runner.invoke(cli, ["chat", "--model", str(TEXT_GGUF)], input=b"caf\xe9\n")
    one_error_line(res, "not UTF-8")


@pytest.mark.parametrize("encoding", ["utf-8:strict", "ascii:strict"])
def test_inspect_prints_undecodable_metadata_under_a_strict_locale(tmp_path, encoding):
    import numpy as np

    from ccsm_core.formats.gguf_writer import write_gguf

    f = tmp_path / "m.gguf"
    write_gguf(f, {"general.name": "caf\udce9 ü"}, {"w": np.zeros((2, 32), np.float32)}, "llama")
    for extra in ([], ["--json"]):
        res = subprocess.run(
            [*CCSM, "inspect", str(f), *extra],
            capture_output=True,
            env={**os.environ, "PYTHONIOENCODING": encoding},
            timeout=60,
        )
        assert res.returncode == 0 and b"Traceback" not in res.stderr, res.stderr
        assert b"caf\\udce9" in res.stdout, res.stdout


# --- config.toml ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body,needle",
    [
        ("[run]\ntemperature = inf\n", "temperature = inf is not a finite number"),
        ("[run]\ntemperature = nan\n", "temperature"),
        ("[run]\nseed = [1, 2]\n", "seed = [1, 2] is a list"),
        ("[run]\nmodel = 1979-05-27\n", "model = 1979-05-27 is a date"),
        ("[run]\nmodel = 07:32:00\n", "is a time"),
        ("[run]\nmodel = { a = 1 }\n", "is a dict"),
        ("[run]\nno-such-key = 1\n", "no-such-key is not an option of ccsm run"),
        ("[run]\nseed = -1\n", "seed = -1"),
        ('[run]\nseed = "many"\n', "seed"),
        ("[run]\ntop-p = 2.0\n", "top-p"),
        ("[run]\nlogit-bias = [[1, 2]]\n", "logit-bias"),
        ("[run]\ntokenizer = -9223372036854775808\n", "is not a path"),
        ("[run]\ncodes-out = 1\n", "codes-out = 1 is not a path"),
        ('[run]\ncontext = [[0, "hi", 2]]\n', "is not a path"),
        ("[voice.add]\nspeaker = -4\n", "[voice.add] speaker"),
        ("[voice]\nadd = 3\n", "[voice.add] must be a table"),
        ("run = 3\n", "[run] must be a table"),
        ("[run\n", "not valid TOML"),
    ],
)
def test_config_values_of_the_wrong_type_name_key_and_file(cli_runner, tmp_path, body, needle):
    cfg = tmp_path / "config.toml"
    cfg.write_text(body)
    line = one_error_line(cli_runner.invoke(cli, ["--config", str(cfg), "run", "--help"]), needle)
    assert str(cfg) in line


def test_config_not_utf8_or_a_fifo(cli_runner, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_bytes(b"[run]\nmodel = '\xff'\n")
    one_error_line(cli_runner.invoke(cli, ["--config", str(cfg), "run", "--help"]), "not valid TOML")
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    with unblocker(fifo) as blocked:
        one_error_line(cli_runner.invoke(cli, ["--config", str(fifo), "run", "--help"]), "FIFO")
    assert not blocked


def test_config_good_values_become_defaults(tmp_path):
    from ccsm_core.config import load_config

    cfg = tmp_path / "config.toml"
    cfg.write_text(
        "[run]\ntop-k = 5\ntemperature = 1\nlogit-bias = ['1=2']\nmax-audio-ms = 800\n"
        "[voice.add]\nspeaker = 3\n[some-plugin-command]\nanything = [1, 2]\n"
    )
    got = load_config(cfg, cli)
    assert got["run"]["topk"] == 5 and got["run"]["temperature"] == 1.0
    assert got["run"]["logit_bias"] == ("1=2",) and got["run"]["max_audio_ms"] == 800.0
    assert got["voice"]["add"] == {"speaker": 3}
    assert got["some-plugin-command"] == {"anything": [1, 2]}


def test_config_defaults_reach_the_command(cli_runner, tmp_path):
    cfg = tmp_path / "config.toml"
    cfg.write_text("[run]\nmax-audio-ms = 123456\n")
    res = cli_runner.invoke(cli, ["--config", str(cfg), "run", "--help"])
    assert res.exit_code == 0 and "123456" in res.output


# --- --max-memory ----------------------------------------------------------------------------


@pytest.fixture
def fresh_budget() -> Iterator[None]:
    limits.set_max_memory(None)
    yield
    limits.set_max_memory(None)


def test_max_memory_sets_the_budget(cli_runner, fresh_budget):
    res = cli_runner.invoke(cli, ["--max-memory", "64M", "backends", "--json"])
    assert res.exit_code == 0, res.output
    assert limits.max_memory() == 64 << 20


def test_max_memory_from_the_environment(cli_runner, fresh_budget, monkeypatch):
    monkeypatch.setenv("CCSM_MAX_MEMORY", "2G")
    assert cli_runner.invoke(cli, ["backends", "--json"]).exit_code == 0
    assert limits.max_memory() == 2 << 30


@pytest.mark.parametrize("size", ["lots", "-5G", "0", "nan", "1e400"])
def test_max_memory_bad_size(cli_runner, fresh_budget, size):
    one_error_line(cli_runner.invoke(cli, ["--max-memory", size, "backends"]), "memory size")


def test_max_memory_refuses_a_file_too_large_for_it(cli_runner, fresh_budget, tmp_path):
    import numpy as np

    codes = tmp_path / "codes.npy"
    np.save(codes, np.zeros((1000, 32), np.int64))
    res = cli_runner.invoke(cli, ["--max-memory", "64K", "decode", str(codes), "-o", str(tmp_path / "o.wav")])
    one_error_line(res, "memory budget")
    assert not (tmp_path / "o.wav").exists()


# --- FIFOs, devices, folders ---------------------------------------------------------------


class unblocker:
    """While active, a thread opens ``fifo`` for writing whenever a reader waits on it (which
    would otherwise block forever) and records that one did: ``bool(self)`` is True then."""

    def __init__(self, fifo: Path) -> None:
        self.fifo, self.hit, self.stop = fifo, False, threading.Event()

    def _watch(self) -> None:
        while not self.stop.is_set():
            try:
                fd = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                time.sleep(0.05)
                continue
            self.hit = True
            os.close(fd)

    def __enter__(self) -> unblocker:
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def __bool__(self) -> bool:
        return self.hit


def _fifo_cases(fifo: str, tmp: Path) -> list[list[str]]:
    out = str(tmp / "out.wav")
    return [
        ["inspect", fifo],
        ["run", "hi", "--model", fifo, "-o", out],
        ["run", "hi", "--model", "demo", "--context", "0", "hey", fifo, "-o", out],
        ["run", "hi", "--model", "demo", "--voice", fifo, "-o", out],
        ["run", "--text-file", fifo, "--model", "demo", "-o", out],
        ["run", "--batch-file", fifo, "--model", "demo"],
        ["run", "hi", "--model", "demo", "--watermark-key", fifo, "-o", out],
        ["run", "hi", "--model", "demo", "--tokenizer", fifo, "-o", out],
        ["encode", fifo, "-o", str(tmp / "c.npy"), "--model", "demo"],
        ["decode", fifo, "-o", out, "--model", "demo"],
        ["tokenize", "hi", "--model", fifo],
        ["generate", "hi", "--model", fifo],
        ["quantize", fifo, str(tmp / "q.gguf"), "--type", "q8_0"],
        ["convert", fifo, "-o", str(tmp / "c.gguf")],
        ["voice", "import", fifo],
        ["voice", "add", "ann", "--speaker", "0", "--text", "hi", "--audio", fifo, "--model", "demo"],
        ["dialogue", fifo, "--model", "demo", "-o", out],
    ]


def test_fifos_are_refused_without_blocking(cli_runner, tmp_path, monkeypatch):
    monkeypatch.setenv("CCSM_DATA_DIR", str(tmp_path / "data"))
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for args in _fifo_cases(str(fifo), tmp_path):
        with unblocker(fifo) as blocked:
            res = cli_runner.invoke(cli, args)
        assert not blocked, f"{args} opened the FIFO"
        one_error_line(res, "FIFO")


def test_a_fifo_model_in_a_real_process(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    res = subprocess.run(
        [*CCSM, "run", "hi", "--model", str(fifo), "-o", str(tmp_path / "o.wav")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and res.stderr.startswith("error: model") and "FIFO" in res.stderr, res.stderr


@pytest.mark.parametrize("path", ["/proc/self/mem", "/dev/zero", "/dev/null"])
def test_devices_and_proc_files_are_refused(cli_runner, tmp_path, path):
    if not os.path.exists(path):
        pytest.skip(f"no {path} here")
    one_error_line(cli_runner.invoke(cli, ["run", "hi", "--model", path, "-o", str(tmp_path / "o.wav")]), path)
    one_error_line(cli_runner.invoke(cli, ["inspect", path]), path)


def test_a_folder_where_a_file_is_expected(cli_runner, tmp_path):
    one_error_line(cli_runner.invoke(cli, ["inspect", str(tmp_path)]), "folder")
    one_error_line(cli_runner.invoke(cli, ["decode", str(tmp_path), "-o", "x.wav"]), "folder")


# --- every error carries a hint ---------------------------------------------------------


def _sources() -> list[Path]:
    roots = [ROOT / "ccsm_core", *sorted((ROOT / "plugins").glob("*/src"))]
    return [f for r in roots for f in sorted(r.rglob("*.py"))]


def _name(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else None


def _passes_hint(node: ast.stmt) -> bool:
    """``node`` is an ``__init__`` that hands ``super().__init__`` a message and a hint."""
    if not (isinstance(node, ast.FunctionDef) and node.name == "__init__"):
        return False
    return any(
        isinstance(c, ast.Call)
        and _name(c.func) == "__init__"
        and (len(c.args) >= 2 or any(k.arg == "hint" for k in c.keywords))
        for c in ast.walk(node)
    )


def error_classes(trees: list[ast.Module]) -> tuple[set[str], set[str]]:
    """Names of `CcsmError` and its subclasses defined in ``trees`` (by their bases), and those
    of them that set a non-empty ``default_hint`` (or inherit one)."""
    names, hinted = {"CcsmError"}, set()
    classes = [n for t in trees for n in ast.walk(t) if isinstance(n, ast.ClassDef)]
    changed = True
    while changed:
        changed = False
        for c in classes:
            bases = {_name(b) for b in c.bases}
            if c.name not in names and bases & names:
                names.add(c.name)
                changed = True
            own = any(
                isinstance(st, ast.Assign)
                and any(_name(t) == "default_hint" for t in st.targets)
                and isinstance(st.value, ast.Constant)
                and bool(st.value.value)
                for st in c.body
            ) or any(_passes_hint(st) for st in c.body)
            if c.name in names and c.name not in hinted and (own or bases & hinted):
                hinted.add(c.name)
                changed = True
    return names, hinted


def raises_without_hint(files: list[Path]) -> list[str]:
    """``file:line`` of each call of a ccsm error class given no hint (and with no default one)."""
    trees = {f: ast.parse(f.read_text(encoding="utf-8")) for f in files}
    names, hinted = error_classes([*trees.values(), ast.parse((ROOT / "ccsm_core" / "errors.py").read_text())])
    missing = []
    for f, tree in trees.items():
        for node in ast.walk(tree):
            if not isinstance(node, ast.Call) or _name(node.func) not in names - hinted:
                continue
            given = len(node.args) >= 2 or any(k.arg in ("hint", None) for k in node.keywords)
            if not given and not any(isinstance(a, ast.Starred) for a in node.args):
                missing.append(f"{f}:{node.lineno}: {_name(node.func)}")
    return missing


def test_the_hint_scan_finds_a_raise_without_hint(tmp_path):
    f = tmp_path / "m.py"
    f.write_text(
        "class Mine(errors.UsageError):\n    pass\n"
        "class Kind(Mine):\n    default_hint = 'do this'\n"
        "class Full(Mine):\n    def __init__(self, n):\n        super().__init__(f'{n}', 'wait')\n"
        "raise UsageError('x')\nraise UsageError('x', 'y')\nraise errors.FormatError('a', hint='b')\n"
        "raise Mine('m')\nraise Kind('k')\nraise BackendUnavailable('b')\nraise ValueError('v')\n"
    )
    s = "raise Full(3)\n"
    f.write_text(f.read_text() + s)
    assert raises_without_hint([f]) == [f"{f}:8: UsageError", f"{f}:11: Mine"]


def test_every_error_raised_has_a_hint():
    missing = raises_without_hint(_sources())
    assert not missing, f"{len(missing)} errors without a hint:\n" + "\n".join(missing)


def test_codes_files_are_read_and_lying_headers_refused(tmp_path):
    import numpy as np

    from ccsm_core.commands.codec import read_codes
    from ccsm_core.errors import FormatError

    good = tmp_path / "good.npy"
    codes = np.arange(32 * 5).reshape(5, 32) % 2048
    np.save(good, codes)
    assert np.array_equal(read_codes(str(good)), codes.T)
    lying = tmp_path / "lying.npy"
    header = np.lib.format.header_data_from_array_1_0(codes)
    with lying.open("wb") as fh:
        np.lib.format.write_array_header_1_0(fh, {**header, "shape": (10**12, 32)})
        fh.write(codes.tobytes())
    with pytest.raises(FormatError, match="more than the file holds"):
        read_codes(str(lying))
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(FormatError, match="Python objects"):
        read_codes(str(pickled))


@pytest.mark.parametrize(
    "exc,needle",
    [
        (MemoryError(), "out of memory"),
        (OSError(5, "Input/output error", "/some/file"), "cannot use /some/file: Input/output error"),
    ],
)
def test_memory_and_io_errors_are_one_line(cli_runner, monkeypatch, exc, needle):
    import ccsm_core.commands.run as run_cmd

    def fail(*a, **k):
        raise exc

    monkeypatch.setattr(run_cmd, "read_text", fail)
    one_error_line(cli_runner.invoke(cli, ["run", "hi", "--model", "demo"]), needle)


def test_generate_with_an_empty_model_name_is_refused() -> None:
    from click.testing import CliRunner

    from ccsm_core.cli import cli

    res = CliRunner().invoke(cli, ["generate", "Hi", "--model", "", "-n", "8000"])
    assert res.exit_code == 2 and "names no model" in res.output and "(hint:" in res.output
