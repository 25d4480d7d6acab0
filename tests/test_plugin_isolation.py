"""Plugins cannot take the CLI down: fake distributions (a ``*.dist-info`` folder with METADATA
and entry_points.txt, and the plugin's module) are put on the PYTHONPATH of a subprocess that runs
the real CLI, one per misbehaviour. Each run checks the exit code, the one ``error:`` line with
its hint, that no traceback is printed and that the other plugins are still listed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

FIXTURE = Path(__file__).parent / "fixtures" / "csm-tiny"
RUN = ["run", "hi", "--model", str(FIXTURE), "-b", "numpy", "--seed", "1", "--max-audio-ms", "160"]


@dataclass
class Result:
    rc: int
    out: str
    err: str

    def error_line(self) -> str:
        """The one ``error:`` line of a failed command (checked: exit 2, nothing else on
        stderr that looks like a traceback)."""
        assert self.rc == 2, (self.rc, self.out, self.err)
        assert "Traceback" not in self.err + self.out, self.err
        lines = [ln for ln in self.err.splitlines() if ln.startswith("error:")]
        assert len(lines) == 1, self.err
        assert "(hint: " in lines[0], lines[0]
        return lines[0]

    def ok(self) -> Result:
        assert self.rc == 0, (self.rc, self.out, self.err)
        assert "Traceback" not in self.err + self.out, self.err
        return self


def fake_plugin(
    root: Path,
    dist: str,
    module: str | None = None,
    source: str = "",
    *,
    entry: str | None = None,
    metadata: str | bytes | None = None,
    entry_points: str | bytes | None = None,
) -> None:
    """A distribution ``dist`` in ``root``: METADATA (Name and Version unless given), an entry
    point ``<module> = <module>.plugin`` (unless given) and the module ``<module>/plugin.py``."""
    info = root / f"{dist.replace('-', '_')}-1.0.dist-info"
    info.mkdir(parents=True)
    meta = metadata if metadata is not None else f"Metadata-Version: 2.1\nName: {dist}\nVersion: 1.0\n"
    ep = entry_points if entry_points is not None else f"[ccsm]\n{entry or f'{module} = {module}.plugin'}\n"
    for name, text in (("METADATA", meta), ("entry_points.txt", ep)):
        (info / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    if module:
        pkg = root / module
        pkg.mkdir(exist_ok=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "plugin.py").write_text("from ccsm_core import hookimpl\n" + textwrap.dedent(source))


def ccsm(root: Path, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> Result:
    """The real CLI in a subprocess with ``root`` on its PYTHONPATH."""
    full = {k: v for k, v in os.environ.items() if not k.startswith("CCSM_")}
    full.update(PYTHONPATH=str(root), **(env or {}))
    code = "from ccsm_core.cli import main; main()"
    p = subprocess.run(
        [sys.executable, "-c", code, *args], env=full, cwd=cwd or root, capture_output=True, text=True, timeout=120
    )
    return Result(p.returncode, p.stdout, p.stderr)


def records(root: Path, **env: str) -> dict[str, dict]:
    res = ccsm(root, "plugins", "--json", env=env).ok()
    return {r["name"]: r for r in json.loads(res.out)}


def assert_others_listed(recs: dict[str, dict]) -> None:
    assert recs["ccsm.formats"]["status"] == "ok" and recs["ccsm.numpy_backend"]["status"] == "ok"
    assert recs["ccsm_watermark"]["status"] == "ok"


# -- plugin code raising BaseException ---------------------------------------------------------

RAISES = {
    "SystemExit": ("raise SystemExit(3)", "SystemExit: 3"),
    "sys.exit": ("import sys; sys.exit('bye')", "SystemExit: bye"),
    "KeyboardInterrupt": ("raise KeyboardInterrupt", "KeyboardInterrupt"),
    "GeneratorExit": ("raise GeneratorExit('closed')", "GeneratorExit: closed"),
}


@pytest.mark.parametrize("how", RAISES)
def test_base_exception_at_import_marks_the_plugin_failed(tmp_path, how):
    stmt, shown = RAISES[how]
    fake_plugin(tmp_path, "rude-import", "rude_import", stmt)
    assert "Commands:" in ccsm(tmp_path, "--help").ok().out
    table = ccsm(tmp_path, "plugins").ok().out
    row = next(ln for ln in table.splitlines() if ln.startswith("rude_import"))
    assert "failed" in row and shown in row
    recs = records(tmp_path)
    assert recs["rude_import"]["status"] == "failed" and recs["rude_import"]["error"] == shown
    assert_others_listed(recs)
    assert ccsm(tmp_path, "plugins", "--check").rc == 1


def test_base_exceptions_in_hooks_mark_the_plugin_failed(tmp_path):
    fake_plugin(
        tmp_path,
        "rude-hooks",
        "rude_hooks",
        """
        @hookimpl
        def register_samplers(register):
            register("half", lambda: lambda lp, rng: 0, kind="sampler")
            raise SystemExit(4)
        """,
    )
    fake_plugin(
        tmp_path,
        "rude-commands",
        "rude_commands",
        """
        @hookimpl
        def register_commands(cli):
            raise KeyboardInterrupt
        """,
    )
    assert "Commands:" in ccsm(tmp_path, "--help").ok().out
    recs = records(tmp_path)
    assert (recs["rude_hooks"]["status"], recs["rude_hooks"]["error"]) == ("failed", "SystemExit: 4")
    assert recs["rude_hooks"]["registered"] == {}
    assert recs["rude_commands"]["status"] == "failed" and recs["rude_commands"]["error"] == "KeyboardInterrupt"
    assert_others_listed(recs)


def test_what_a_plugin_prints_while_loading_stays_off_stdout(tmp_path):
    fake_plugin(
        tmp_path,
        "chatty",
        "chatty",
        """
        print("hello from chatty")

        @hookimpl
        def register_samplers(register):
            print("registering")
            register("loud", lambda: lambda lp, rng: 0, kind="sampler")
        """,
    )
    res = ccsm(tmp_path, "plugins", "--json").ok()
    recs = {r["name"]: r for r in json.loads(res.out)}  # stdout is only the JSON
    assert recs["chatty"]["registered"] == {"samplers": ["loud"]}
    assert "hello from chatty" in res.err and "registering" in res.err


def test_a_plugin_cannot_replace_a_core_command(tmp_path):
    fake_plugin(
        tmp_path,
        "hijack",
        "hijack",
        """
        @hookimpl
        def register_commands(cli):
            @cli.command(name="run")
            def run():
                print("unmarked!")
        """,
    )
    assert "Speak TEXT" in ccsm(tmp_path, "run", "--help").ok().out
    rec = records(tmp_path)["hijack"]
    assert rec["status"] == "failed" and "replaces the command 'run'" in rec["error"]


BACKENDS = """
    class Ghost:
        pass

    @hookimpl
    def register_backends(register):
        register("exiting", lambda **o: exec("raise SystemExit(6)"))
        register("none", lambda **o: None)
        register("hollow", lambda **o: Ghost())
        register("moody", lambda **o: None, available=lambda: exec("raise SystemExit(5)"))
"""


def test_backend_available_raising_is_a_reason(tmp_path):
    fake_plugin(tmp_path, "bad-backends", "bad_backends", BACKENDS)
    rows = {r["name"]: r for r in json.loads(ccsm(tmp_path, "backends", "--json").ok().out)}
    assert rows["moody"]["available"] is False and rows["moody"]["reason"] == "SystemExit: 5"
    assert rows["numpy"]["available"] is True


@pytest.mark.parametrize(
    ("backend", "problem"),
    [
        ("exiting", "the factory of backend 'exiting' raised SystemExit: 6"),
        ("none", "the factory of backend 'none' returned None instead of a backend"),
        ("hollow", "the factory of backend 'hollow' returned Ghost, which lacks"),
    ],
)
def test_backend_factory_failures_are_one_line(tmp_path, backend, problem):
    fake_plugin(tmp_path, "bad-backends", "bad_backends", BACKENDS)
    line = ccsm(tmp_path, *RUN, "-b", backend, "--codes-out", str(tmp_path / "x.npy")).error_line()
    assert line.startswith(f"error: plugin bad_backends: {problem}")
    assert "CCSM_DISABLE_PLUGINS=bad_backends" in line
    assert not (tmp_path / "x.npy").exists()


def test_tokenizer_sniff_raising_is_one_line(tmp_path):
    fake_plugin(
        tmp_path,
        "bad-tok",
        "bad_tok",
        """
        @hookimpl
        def register_tokenizers(register):
            def sniff(source):
                raise SystemExit(7)
            register("sniffy", lambda source: None, sniff=sniff)
        """,
    )
    (tmp_path / "vocab.weird").write_text("not a tokenizer")
    args = [*RUN, "--tokenizer", str(tmp_path / "vocab.weird"), "--codes-out", str(tmp_path / "x.npy")]
    line = ccsm(tmp_path, *args).error_line()
    assert "plugin bad_tok: the sniff of tokenizer 'sniffy' raised SystemExit: 7" in line


# -- watermarking: never silently unmarked -----------------------------------------------------

MARKERS = """
    import numpy as np

    class Marker:
        def __init__(self, how):
            self.how = how

        def embed(self, audio, rate, payload):
            if self.how == "raise":
                raise RuntimeError("the mark would not fit")
            if self.how == "exit":
                raise SystemExit(8)
            return audio[:10]

        def detect(self, audio, rate):
            return None

    @hookimpl
    def register_watermarkers(register):
        for how in ("raise", "exit", "short"):
            register(how, lambda key, how=how: Marker(how), payload_bits=8, public_key=b"k")
"""


@pytest.mark.parametrize(
    ("method", "problem"),
    [
        ("raise", "the embed() of watermark 'raise' raised RuntimeError: the mark would not fit"),
        ("exit", "the embed() of watermark 'exit' raised SystemExit: 8"),
        ("short", "the embed() of watermark 'short' returned audio of shape (10,)"),
    ],
)
def test_failing_watermarker_fails_run_and_writes_nothing(tmp_path, method, problem):
    fake_plugin(tmp_path, "bad-marks", "bad_marks", MARKERS)
    out = tmp_path / "out.wav"
    line = ccsm(tmp_path, *RUN, "-o", str(out), "--watermark-method", method).error_line()
    assert line.startswith(f"error: plugin bad_marks: {problem}") and "--no-watermark" in line
    assert not out.exists() and not list(tmp_path.glob("*.wav*"))


def test_no_watermark_still_writes_with_a_failing_watermarker(tmp_path):
    fake_plugin(tmp_path, "bad-marks", "bad_marks", MARKERS)
    out = tmp_path / "out.wav"
    ccsm(tmp_path, *RUN, "-o", str(out), "--watermark-method", "exit", "--no-watermark").ok()
    assert out.stat().st_size > 44


def test_a_broken_watermark_plugin_stops_run_unless_no_watermark(tmp_path):
    fake_plugin(
        tmp_path,
        "broken-marks",
        "broken_marks",
        """
        @hookimpl
        def register_watermarkers(register):
            raise SystemExit(9)
        """,
    )
    out = tmp_path / "out.wav"
    line = ccsm(tmp_path, *RUN, "-o", str(out)).error_line()
    assert "cannot watermark the audio: the watermark plugin broken_marks is failed: SystemExit: 9" in line
    assert "--no-watermark" in line and not out.exists()
    ccsm(tmp_path, *RUN, "-o", str(out), "--no-watermark").ok()
    assert out.exists()


def test_disabled_watermark_plugin_stops_run_unless_no_watermark(tmp_path):
    out = tmp_path / "out.wav"
    for env in ({"CCSM_DISABLE_PLUGINS": "ccsm_watermark"}, {"CCSM_LOAD_PLUGINS": ""}):
        line = ccsm(tmp_path, *RUN, "-o", str(out), env=env).error_line()
        assert "the watermark plugin ccsm_watermark is disabled" in line
        assert not out.exists()
    ccsm(tmp_path, *RUN, "-o", str(out), "--no-watermark", env={"CCSM_LOAD_PLUGINS": ""}).ok()
    assert out.exists()


def test_foreign_entry_point_named_like_the_watermark_plugin_is_an_error(tmp_path):
    fake_plugin(
        tmp_path,
        "evil-marks",
        "evil_marks",
        """
        @hookimpl
        def register_samplers(register):
            pass
        """,
        entry="ccsm_watermark = evil_marks.plugin",
    )
    recs = records(tmp_path)
    for key in ("ccsm_watermark (ccsm-watermark)", "ccsm_watermark (evil-marks)"):
        assert recs[key]["status"] == "conflict"
        assert "ccsm-watermark and evil-marks" in recs[key]["error"]
    out = tmp_path / "out.wav"
    line = ccsm(tmp_path, *RUN, "-o", str(out)).error_line()
    assert "ccsm-watermark" in line and "evil-marks" in line and not out.exists()
    assert ccsm(tmp_path, "plugins", "--check").rc == 1


def test_foreign_entry_point_named_like_a_builtin_is_a_conflict(tmp_path):
    fake_plugin(tmp_path, "evil-formats", "evil_formats", "", entry="ccsm.formats = evil_formats.plugin")
    recs = records(tmp_path)
    assert recs["ccsm.formats"]["status"] == "ok" and recs["ccsm.formats"]["registered"]["formats"]
    rec = recs["ccsm.formats (evil-formats)"]
    assert rec["status"] == "conflict" and "ccsm and evil-formats" in rec["error"]


# -- malformed metadata ------------------------------------------------------------------------

META = "Metadata-Version: 2.1\nName: odd\n"
MALFORMED = {
    "bad Requires-Dist": (
        {"metadata": META + "Version: 1.0\nRequires-Dist: ccsm >=>= 0.1\n"},
        "odd",
        "its Requires-Dist 'ccsm >=>= 0.1' is malformed",
    ),
    "no Version": ({"metadata": META}, "odd", "its distribution metadata has no Version"),
    "no Name": ({"metadata": "Metadata-Version: 2.1\nVersion: 1.0\n"}, "odd", "has no Name"),
    "entry point without value": ({"entry_points": "[ccsm]\nodd\n"}, "odd", "its entry_points.txt is malformed"),
    "entry points not UTF-8": ({"entry_points": b"[ccsm]\nodd = \xff\xfe\n"}, "odd", "entry_points.txt is malformed"),
    "bad entry point value": ({"entry": "odd = odd plugin [x"}, "odd", "is not 'module' or 'module:attribute'"),
    "missing attribute": ({"entry": "odd = odd.plugin:nothing"}, "odd", "AttributeError"),
}


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_metadata_fails_only_that_plugin(tmp_path, case):
    kwargs, name, problem = MALFORMED[case]
    fake_plugin(tmp_path, "odd", "odd", "@hookimpl\ndef register_samplers(register):\n    pass\n", **kwargs)
    assert "Commands:" in ccsm(tmp_path, "--help").ok().out
    ccsm(tmp_path, "backends").ok()
    table = ccsm(tmp_path, "plugins").ok().out
    assert "ccsm_watermark" in table and "ccsm.formats (built-in)" in table
    row = next(ln for ln in table.splitlines() if ln.startswith(name))
    assert "failed" in row and problem in row, row
    assert ccsm(tmp_path, "plugins", "--check").rc == 1


# -- the switches, in every combination --------------------------------------------------------


@pytest.mark.parametrize(
    "env",
    [
        {"CCSM_DISABLE_PLUGINS": "ccsm_typical"},
        {"CCSM_LOAD_PLUGINS": ""},
        {"CCSM_LOAD_PLUGINS": " , ,"},
        {"CCSM_LOAD_PLUGINS": "ccsm-cpu,nonexistent"},
        {"CCSM_LOAD_PLUGINS": "", "CCSM_DISABLE_PLUGINS": "ccsm.formats,ccsm.samplers"},
        {"CCSM_LOAD_PLUGINS": "ccsm_typical", "CCSM_DISABLE_PLUGINS": "ccsm_typical"},
    ],
)
def test_plugin_switches_never_crash_the_listing(tmp_path, env):
    fake_plugin(tmp_path, "rude-import", "rude_import", "raise SystemExit(3)")
    for args in (["plugins"], ["plugins", "-v"], ["plugins", "--json"], ["plugins", "--hook", "register_backends"]):
        ccsm(tmp_path, *args, env=env).ok()
    recs = records(tmp_path, **env)
    assert recs["ccsm.numpy_backend"]["status"] == "ok"
    for name in [n.strip() for n in env.get("CCSM_DISABLE_PLUGINS", "").split(",") if n.strip()]:
        assert recs[name]["status"] == "disabled"


# -- the user's Ctrl-C still stops ccsm --------------------------------------------------------


def test_a_real_ctrl_c_during_plugin_import_stops_ccsm(tmp_path):
    started = tmp_path / "started"
    fake_plugin(
        tmp_path, "slow", "slow", f"import pathlib, time\npathlib.Path({str(started)!r}).touch()\ntime.sleep(60)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CCSM_")}
    env["PYTHONPATH"] = str(tmp_path)
    p = subprocess.Popen(
        [sys.executable, "-c", "from ccsm_core.cli import main; main()", "plugins"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not started.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, (p.returncode, err)
    assert "interrupted" in err and "Traceback" not in err
