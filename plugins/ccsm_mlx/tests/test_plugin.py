"""Installation, registration, option checks, and a plugin module that imports neither mlx nor numpy."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys
import types

import pytest

from ccsm_core.errors import BackendUnavailable, UsageError


def test_distribution_installed_with_entry_point():
    dist = md.distribution("ccsm-mlx")
    eps = [ep for ep in dist.entry_points if ep.group == "ccsm"]
    assert [(ep.name, ep.value) for ep in eps] == [("ccsm_mlx", "ccsm_mlx.plugin")]
    from packaging.requirements import Requirement

    reqs = {
        (r.name, tuple(sorted(r.extras)), str(r.marker)): r.specifier for r in map(Requirement, dist.requires or [])
    }
    assert "0.1.5" in reqs[("ccsm", (), "None")] and "0.2.0" not in reqs[("ccsm", (), "None")]
    darwin = reqs[("mlx", (), 'sys_platform == "darwin"')]
    linux = reqs[("mlx", ("cpu",), 'sys_platform == "linux"')]
    for spec in (darwin, linux):  # pinned to the tested minor release
        assert "0.32.4" in spec and "0.33.0" not in spec and "0.31.9" not in spec


def test_registered_and_available():
    from ccsm_core.backends import backend_status
    from ccsm_core.plugins import PluginManager

    pm = PluginManager()
    entry = pm.registry("backends").get("mlx")
    assert entry.priority == (5 if sys.platform == "darwin" else -1)
    assert entry.devices == ("cpu", "gpu")
    assert backend_status(entry) is None
    rec = pm.records["ccsm_mlx"]
    assert rec.status == "ok", rec.error
    assert rec.registered.get("backends") == ["mlx"]
    be = entry.factory(dtype="bf16", quantize=4, threads=2)  # threads: accepted, MLX picks its own
    assert be.name == "mlx" and be.precision.key() == "bf16-q4g64"


def test_register_probe(register_probe):
    from ccsm_mlx import plugin

    plugin.register_backends(register=register_probe)
    assert register_probe.names == ["mlx"]
    _, factory, meta = register_probe.calls[0]
    assert meta["available"]() is None
    assert factory().precision.key() == "stored"


@pytest.mark.parametrize(
    "options,match",
    [
        ({"dtype": "fp8"}, "dtype"),
        ({"quantize": 7}, "quantize"),
        ({"quantize": "four"}, "quantize"),
        ({"group_size": 48}, "group_size"),
        ({"device": "tpu"}, "device"),
        ({"cache": "sometimes"}, "cache"),
        ({"colour": "red"}, "unknown option"),
    ],
)
def test_bad_options_are_usage_errors(options, match):
    from ccsm_mlx.plugin import factory

    with pytest.raises(UsageError, match=match):
        factory(**options)


def test_missing_gpu_is_unavailable():
    import mlx.core as mx
    from ccsm_mlx.plugin import factory

    if mx.is_available(mx.gpu):
        pytest.skip("this machine has an MLX GPU")
    with pytest.raises(BackendUnavailable, match="no gpu"):
        factory(device="gpu")


def _importtime(code: str) -> tuple[subprocess.CompletedProcess, set[str]]:
    r = subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    return r, {ln.split("|")[-1].strip() for ln in r.stderr.splitlines() if ln.startswith("import time:")}


def test_plugin_module_import_is_light():
    r, imported = _importtime("import ccsm_mlx.plugin")
    assert "ccsm_mlx.plugin" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("mlx", "numpy")}
    assert not heavy, f"plugin import pulled in {sorted(heavy)}"
    cumulative = [
        int(ln.split("|")[1])
        for ln in r.stderr.splitlines()
        if ln.startswith("import time:") and ln.split("|")[2].strip() == "ccsm_mlx.plugin"
    ]
    assert cumulative and cumulative[0] < 200_000, f"import ccsm_mlx.plugin took {cumulative} us (budget 0.2 s)"


def test_cli_help_does_not_import_mlx():
    code = (
        "import sys; from ccsm_core.cli import main; sys.argv = ['ccsm', 'mlx', '--help']\n"
        "try:\n    main()\nexcept SystemExit:\n    pass"
    )
    r, imported = _importtime(code)
    assert "convert" in r.stdout
    assert not {m for m in imported if m.split(".")[0] == "mlx"}


@pytest.fixture
def no_mlx(monkeypatch):
    from ccsm_mlx import plugin

    monkeypatch.setattr(plugin, "_reason", [])
    for name in [m for m in sys.modules if m == "mlx" or m.startswith("mlx.")]:
        monkeypatch.delitem(sys.modules, name)
    return monkeypatch


def test_available_says_why_when_mlx_is_missing(no_mlx):
    from ccsm_mlx import plugin

    no_mlx.setitem(sys.modules, "mlx", None)  # import mlx raises ImportError
    reason = plugin._available()
    assert reason is not None and reason.startswith("mlx not importable") and "mlx[cpu]>=0.32,<0.33" in reason
    assert "\n" not in reason


def test_available_refuses_an_untested_mlx(no_mlx):
    from ccsm_mlx import plugin

    fake = types.ModuleType("mlx")
    fake.core = types.ModuleType("mlx.core")
    fake.core.__version__ = "0.40.1"
    no_mlx.setitem(sys.modules, "mlx", fake)
    no_mlx.setitem(sys.modules, "mlx.core", fake.core)
    assert "0.40.1 is outside the tested range" in plugin._available()


def test_ccsm_backends_reports_the_reason():
    code = (
        "import sys; sys.modules['mlx'] = None\n"
        "from ccsm_core.cli import main; sys.argv = ['ccsm', 'backends', '--json']; main()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    row = {b["name"]: b for b in json.loads(r.stdout)}["mlx"]
    assert row["available"] is False and "mlx not importable" in row["reason"]


def test_plugins_json_lists_ok():
    code = "import sys; from ccsm_core.cli import main; sys.argv = ['ccsm', 'plugins', '--json']; main()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    rec = {x["name"]: x for x in json.loads(r.stdout)}["ccsm_mlx"]
    assert rec["status"] == "ok" and rec["registered"]["backends"] == ["mlx"]


def test_run_with_dtype_and_quantize_flags(cli_runner, tmp_path):
    """The issue's spelling: ccsm run ... --backend mlx --dtype bf16 --quantize 4."""
    from pathlib import Path

    import numpy as np

    from ccsm_core.cli import cli

    fixture = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "csm-tiny"
    out = tmp_path / "f.npy"
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "Hello from CSM.",
            "--model",
            str(fixture),
            "--backend",
            "mlx",
            "--dtype",
            "bf16",
            "--quantize",
            "4",
            "--topk",
            "1",
            "--max-audio-ms",
            "240",
            "--seed",
            "1",
            "--codes-out",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    frames = np.load(out)
    assert frames.shape[1] == 32 and 0 < len(frames) <= 3
