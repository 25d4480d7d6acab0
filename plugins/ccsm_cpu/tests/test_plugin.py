"""Installation, registration through ccsm's plugin manager, and a light plugin module."""

from __future__ import annotations

import importlib.metadata as md
import json
import subprocess
import sys


def test_distribution_installed_with_entry_point():
    dist = md.distribution("ccsm-cpu")
    eps = [ep for ep in dist.entry_points if ep.group == "ccsm"]
    assert [(ep.name, ep.value) for ep in eps] == [("ccsm_cpu", "ccsm_cpu.plugin")]
    reqs = dist.requires or []
    assert "ggml-python==0.0.45" in reqs
    assert any(r.startswith("ccsm") and "<0.2" in r for r in reqs)


def test_registered_and_available():
    from ccsm_core.backends import backend_status
    from ccsm_core.plugins import PluginManager

    pm = PluginManager()
    reg = pm.registry("backends")
    assert "ggml-cpu" in reg
    entry = reg.get("ggml-cpu")
    assert entry.priority == 10
    assert entry.devices == ("cpu",)
    assert backend_status(entry) is None
    rec = pm.records["ccsm_cpu"]
    assert rec.status == "ok", rec.error
    assert rec.registered == {"backends": ["ggml-cpu"]}
    be = entry.factory(threads=1)
    try:
        assert be.name == "ggml-cpu" and be.threads == 1
    finally:
        be.close()


def test_register_probe(register_probe):
    from ccsm_cpu import plugin

    plugin.register_backends(register=register_probe)
    assert register_probe.names == ["ggml-cpu"]
    _, factory, meta = register_probe.calls[0]
    assert meta["available"]() is None
    be = factory()
    try:
        import os

        assert be.threads == (os.cpu_count() or 1)
    finally:
        be.close()


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-X", "importtime", "-c", code], capture_output=True, text=True, timeout=120)


def test_plugin_module_import_is_light():
    """Importing the entry-point module must not import numpy or cffi, nor load the ggml library."""
    code = (
        "import sys, ccsm_cpu.plugin; "
        "maps = open('/proc/self/maps').read() if sys.platform.startswith('linux') else ''; "
        "print('GGML' if 'libggml' in maps else 'NOGGML')"
    )
    r = _run(code)
    assert r.returncode == 0, r.stderr
    imported = {line.split("|")[-1].strip() for line in r.stderr.splitlines() if line.startswith("import time:")}
    assert "ccsm_cpu.plugin" in imported
    heavy = {m for m in imported if m.split(".")[0] in ("numpy", "cffi", "_cffi_backend", "ggml")}
    assert not heavy, f"plugin import pulled in {sorted(heavy)}"
    assert r.stdout.strip() == "NOGGML"
    cumulative = [
        int(line.split("|")[1])
        for line in r.stderr.splitlines()
        if line.startswith("import time:") and line.split("|")[2].strip() == "ccsm_cpu.plugin"
    ]
    assert cumulative and cumulative[0] < 200_000, f"import ccsm_cpu.plugin took {cumulative} us (budget 0.2 s)"


def test_available_reports_a_reason_when_the_library_is_missing(monkeypatch):
    from ccsm_cpu import lib

    monkeypatch.setattr(lib, "_loaded", None)
    monkeypatch.setattr(lib, "_failure", None)
    monkeypatch.delenv(lib.LIB_ENV, raising=False)
    monkeypatch.setattr(lib.importlib.util, "find_spec", lambda name: None)
    reason = lib.unavailable_reason()
    assert reason is not None and "ggml-python==0.0.45" in reason and "\n" not in reason


def test_ccsm_ggml_lib_names_another_build(monkeypatch, tmp_path):
    """CCSM_GGML_LIB: a library file or its folder; a path without one is a clear reason."""
    from ccsm_cpu import lib

    real = lib.load().path
    monkeypatch.setenv(lib.LIB_ENV, str(real.parent))
    assert lib.find_library() == real
    monkeypatch.setenv(lib.LIB_ENV, str(real))
    assert lib.find_library() == real
    monkeypatch.setattr(lib, "_loaded", None)
    monkeypatch.setattr(lib, "_failure", None)
    monkeypatch.setenv(lib.LIB_ENV, str(tmp_path))
    reason = lib.unavailable_reason()
    assert reason is not None and "CCSM_GGML_LIB" in reason and "make ggml-avx2" in reason


def test_kernel_family_follows_the_features():
    from ccsm_cpu.lib import load

    g = load()
    family, feats = g.kernel_family(), g.features()
    if "NEON" in feats:
        assert family == "neon"
    elif "AVX512" in feats:
        assert family == ("avx512fp16" if g.f16_accumulates_in_half else "avx512")
    elif "AVX2" in feats:
        assert family == "avx2" and not g.f16_accumulates_in_half
    assert ("AVX512_FP16" in feats) == g.f16_accumulates_in_half


def test_cli_lists_backend_ok():
    code = "import sys; from ccsm_core.cli import main; sys.argv = ['ccsm', 'plugins', '--json']; main()"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    records = {rec["name"]: rec for rec in json.loads(r.stdout)}
    assert records["ccsm_cpu"]["status"] == "ok"
    assert records["ccsm_cpu"]["registered"] == {"backends": ["ggml-cpu"]}


def test_backends_command_describes_ggml(cli_runner):
    import json

    from ccsm_core.cli import cli

    res = cli_runner.invoke(cli, ["backends", "--json"])
    assert res.exit_code == 0, res.output
    row = {r["name"]: r for r in json.loads(res.output)}["ggml-cpu"]
    assert row["available"] is True
    assert "threads" in row["details"] and "SIMD" in row["details"] and "ggml 0.15" in row["details"]
