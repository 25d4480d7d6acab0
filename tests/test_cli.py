"""The command line: help everywhere, validation, one-line errors, config defaults."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ccsm_core import __version__
from ccsm_core.cli import cli


def test_version_and_help(cli_runner):
    assert __version__ in cli_runner.invoke(cli, ["--version"]).output
    res = cli_runner.invoke(cli, ["--help"])
    assert res.exit_code == 0
    for name in cli.list_commands(None):
        sub = cli_runner.invoke(cli, [name, "--help"])
        assert sub.exit_code == 0 and "Usage:" in sub.output, name


@pytest.mark.parametrize(
    "args,needle",
    [
        (["run", "hi", "--temperature", "-1"], "temperature"),
        (["run", "hi", "--topk", "0"], "topk"),
        (["run", "hi", "--top-p", "0"], "top-p"),
        (["run", "hi", "--top-p", "1.5"], "top-p"),
        (["run", "hi", "--speaker", "-2"], "speaker"),
        (["run", "hi", "--speaker", "one"], "speaker"),
    ],
)
def test_option_validation(cli_runner, args, needle):
    res = cli_runner.invoke(cli, args)
    assert res.exit_code == 2 and needle in res.output
    assert "Traceback" not in res.output


def test_ccsm_errors_are_one_line(cli_runner, tiny_csm_dir, tmp_path):
    cases = [
        (["run", "  ", "--model", str(tiny_csm_dir), "--codes-out", "x.npy"], "text is empty"),
        (["run", "hi", "--codes-out", str(tmp_path / "x.npy")], "no model given"),
        (["run", "hi", "--model", str(tmp_path / "missing"), "--codes-out", str(tmp_path / "x.npy")], "does not exist"),
        (
            ["run", "hi", "--model", str(tiny_csm_dir), "--backend", "nmpy", "--codes-out", "x.npy"],
            "did you mean 'numpy'",
        ),
        (["run", "hi", "--model", str(tiny_csm_dir), "--sampler", "nope", "--codes-out", "x.npy"], "unknown sampler"),
        (["run", "hi", "--model", str(tiny_csm_dir), "--logit-bias", "x", "--codes-out", "x.npy"], "ID=BIAS"),
        (
            ["run", "hi " * 700, "--no-split", "--model", str(tiny_csm_dir), "--codes-out", str(tmp_path / "x.npy")],
            "does not fit the context",
        ),
    ]
    for args, needle in cases:
        res = cli_runner.invoke(cli, args)
        assert res.exit_code == 2, (args, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], res.output


def test_run_writes_codes(cli_runner, tiny_csm_dir, tmp_path):
    out = tmp_path / "f.npy"
    res = cli_runner.invoke(
        cli,
        ["run", "Hello", "--model", str(tiny_csm_dir), "--seed", "1", "--max-audio-ms", "400", "--codes-out", str(out)],
    )
    assert res.exit_code == 0, res.output
    arr = np.load(out)
    assert arr.ndim == 2 and arr.shape[1] == 32 and arr.shape[0] <= 5 and arr.dtype.kind == "i"


def test_config_file_defaults(cli_runner, tiny_csm_dir, tmp_path, monkeypatch):
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[run]\nmodel = "{tiny_csm_dir}"\nmax-audio-ms = 160\ntemperature = 0\n')
    out1, out2 = tmp_path / "a.npy", tmp_path / "b.npy"
    res = cli_runner.invoke(cli, ["--config", str(cfg), "run", "Hi", "--codes-out", str(out1)])
    assert res.exit_code == 0, res.output
    assert np.load(out1).shape[0] <= 2  # max-audio-ms from the file
    monkeypatch.setenv("CCSM_CONFIG", str(cfg))
    res = cli_runner.invoke(cli, ["run", "Hi", "--codes-out", str(out2)])
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(out1), np.load(out2))  # temperature 0: greedy both times
    cfg.write_text("[run\n")
    res = cli_runner.invoke(cli, ["--config", str(cfg), "run", "Hi"])
    assert res.exit_code == 2 and "not valid TOML" in res.output


def test_help_does_not_import_numpy():
    code = (
        "import sys; from ccsm_core.cli import main; sys.argv=['ccsm','--help']\n"
        "try: main()\nexcept SystemExit: pass\n"
        "heavy = [m for m in ('numpy', 'tokenizers', 'sentencepiece', 'gguf', 'soundfile', 'mlx')"
        " if m in sys.modules]\n"
        "print('HEAVY', heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "HEAVY []" in out, out


def test_backend_options_reach_the_backend(cli_runner, tiny_csm_dir, tmp_path):
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "Hi",
            "--model",
            str(tiny_csm_dir),
            "--backend",
            "numpy",
            "--dtype",
            "bf16",
            "--codes-out",
            str(tmp_path / "x.npy"),
        ],
    )
    assert res.exit_code == 2 and "unknown backend option(s) dtype" in res.output
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "Hi",
            "--model",
            str(tiny_csm_dir),
            "--backend",
            "numpy",
            "--threads",
            "1",
            "--max-audio-ms",
            "160",
            "--codes-out",
            str(tmp_path / "x.npy"),
        ],
    )
    assert res.exit_code == 0, res.output
