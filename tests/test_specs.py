"""Typed registrations: ``register(...)`` builds the kind's spec, and bad keywords fail the plugin."""

from __future__ import annotations

import importlib.util
import inspect

import pytest

from ccsm_core import hookspecs, plugins
from ccsm_core.errors import PluginError
from ccsm_core.plugins import PluginManager
from ccsm_core.specs import (
    KINDS,
    BackendSpec,
    FormatSpec,
    SamplerSpec,
    Spec,
    TokenizerSpec,
    WatermarkerSpec,
    keywords,
    make_spec,
)
from tests.test_plugins import module, sampler_plugin


def _noop(**options):
    return None


def backend_plugin(name: str, **keywords) -> object:
    def register_backends(register):
        register(name, _noop, **keywords)

    return module(f"plug_{name}", register_backends=register_backends)


# -- the kinds table is the one source -----------------------------------------------------
def test_kinds_table_hookspecs_and_manager_agree():
    assert plugins.KINDS == tuple(KINDS)
    hooks = {n for n, f in vars(hookspecs).items() if n.startswith("register_") and callable(f)}
    assert hooks - {"register_commands"} == {k.hook for k in KINDS.values()}
    for kind, (hook, spec) in KINDS.items():
        assert hook == f"register_{kind}"
        assert issubclass(spec, Spec) and spec is not Spec
        assert list(inspect.signature(getattr(hookspecs, hook)).parameters) == ["register"]
    pm = PluginManager(entrypoints=False)
    assert set(pm.registries) == set(KINDS)


def test_spec_classes_and_their_keywords():
    assert {k: s for k, (_, s) in KINDS.items()} == {
        "backends": BackendSpec,
        "formats": FormatSpec,
        "tokenizers": TokenizerSpec,
        "samplers": SamplerSpec,
        "watermarkers": WatermarkerSpec,
    }
    names = {k: [f.name for f in keywords(spec)] for k, (_, spec) in KINDS.items()}
    assert names == {
        "backends": ["priority", "available", "devices", "describe", "batching", "summary"],
        "formats": ["suffixes", "sniff", "summary"],
        "tokenizers": ["sniff", "summary"],
        "samplers": ["kind", "summary"],
        "watermarkers": [
            "payload_bits",
            "sample_rates",
            "default",
            "public_key",
            "default_payload",
            "read_key",
            "summary",
        ],
    }


def test_defaults():
    spec = make_spec("backends", "b", _noop, "p", {})
    assert isinstance(spec, BackendSpec)
    assert (spec.priority, spec.available, spec.devices, spec.describe, spec.summary) == (0, None, ("cpu",), None, "")
    wm = make_spec("watermarkers", "w", _noop, "p", {"payload_bits": 8})
    assert isinstance(wm, WatermarkerSpec)
    assert (wm.sample_rates, wm.default, wm.public_key, wm.default_payload, wm.read_key) == (None, False, None, 0, None)


def test_specs_are_frozen_and_lists_become_tuples():
    spec = make_spec("backends", "b", _noop, "p", {"devices": ["cpu", "gpu"]})
    assert spec.devices == ("cpu", "gpu")
    with pytest.raises(AttributeError):
        spec.priority = 3  # type: ignore[misc]
    wm = make_spec("watermarkers", "w", _noop, "p", {"payload_bits": 8, "sample_rates": [16000]})
    assert wm.sample_rates == (16000,)


# -- bad registrations ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind, keywords, message",
    [
        ("backends", {"priorty": 99}, "unknown keyword 'priorty' - did you mean 'priority'?"),
        (
            "backends",
            {"zzz": 1},
            "unknown keyword 'zzz' - known: priority, available, devices, describe, batching, summary",
        ),
        ("backends", {"priority": "high"}, "priority must be int, got 'high' (str)"),
        ("backends", {"priority": True}, "priority must be int, got True (bool)"),
        ("backends", {"available": "yes"}, "available must be callable or None, got 'yes' (str)"),
        ("backends", {"devices": ("cpu", 3)}, "devices must be tuple[str, ...]"),
        ("formats", {"suffixes": ".gguf"}, "suffixes must be tuple[str, ...], got '.gguf' (str) - write ('.gguf',)"),
        ("formats", {"sniff": b"GGUF"}, "sniff must be callable or None"),
        ("tokenizers", {"snif": len}, "did you mean 'sniff'?"),
        ("samplers", {}, "missing keyword 'kind' ('processor' or 'sampler')"),
        ("samplers", {"kind": "proc"}, "kind must be 'processor' or 'sampler', got 'proc'"),
        ("samplers", {"kind": "sampler", "summary": 3}, "summary must be str"),
        ("watermarkers", {"payload_bits": "32"}, "payload_bits must be int"),
        ("watermarkers", {"payload_bits": 0}, "payload_bits must be at least 1"),
        ("watermarkers", {"payload_bits": 4, "default_payload": 16}, "default_payload 16 does not fit 4 bits"),
        ("watermarkers", {"payload_bits": 4, "public_key": "secret"}, "public_key must be bytes | None"),
        ("watermarkers", {"payload_bits": 4, "default": 1}, "default must be bool"),
    ],
)
def test_bad_keywords_raise(kind, keywords, message):
    with pytest.raises(PluginError) as e:
        make_spec(kind, "thing", _noop, "acme", keywords)
    assert message in str(e.value)
    assert str(e.value).startswith(f"{KINDS[kind].hook}: 'thing': ")


def test_misspelt_keyword_fails_the_plugin_with_a_hint_and_others_work(plugin_manager):
    pm = plugin_manager(
        plugins=[backend_plugin("typo", priorty=99), backend_plugin("fine", priority=3), sampler_plugin()]
    )
    reg = pm.registry("backends")
    rec = pm.records["plug_typo"]
    assert rec.status == "failed"
    assert rec.error == ("PluginError: register_backends: 'typo': unknown keyword 'priorty' - did you mean 'priority'?")
    assert rec.registered == {}
    assert "typo" not in reg and reg.get("fine").priority == 3
    assert "shout" in pm.registry("samplers")
    assert pm.records["plug_fine"].status == "ok"


def test_wrong_type_fails_the_plugin_and_drops_its_earlier_registrations(plugin_manager):
    def register_formats(register):
        register("good", _noop, suffixes=(".good",))
        register("bad", _noop, suffixes=".bad")

    pm = plugin_manager(plugins=[module("plug_fmt", register_formats=register_formats)])
    reg = pm.registry("formats")
    assert "good" not in reg and "bad" not in reg and "gguf" in reg
    rec = pm.records["plug_fmt"]
    assert rec.status == "failed"
    assert "register_formats: 'bad': suffixes must be tuple[str, ...], got '.bad' (str)" in rec.error


def test_strict_mode_raises_the_spec_error(plugin_manager, monkeypatch):
    monkeypatch.setenv("CCSM_STRICT_PLUGINS", "1")
    pm = plugin_manager(plugins=[backend_plugin("typo", priorty=99)])
    with pytest.raises(PluginError, match="did you mean 'priority'"):
        pm.registry("backends")


# -- what the registry holds now -----------------------------------------------------------
def test_registry_holds_typed_specs(plugin_manager):
    pm = plugin_manager(plugins=[sampler_plugin()])
    numpy = pm.registry("backends").get("numpy")
    assert isinstance(numpy, BackendSpec)
    assert (numpy.name, numpy.plugin, numpy.priority, numpy.devices) == ("numpy", "ccsm.numpy_backend", 0, ("cpu",))
    assert numpy.summary.startswith("NumPy reference backend")
    gguf = pm.registry("formats").get("gguf")
    assert isinstance(gguf, FormatSpec) and gguf.suffixes == (".gguf",) and gguf.sniff is not None
    assert gguf.sniff(b"GGUF\x03\x00\x00\x00") and not gguf.sniff(b"PK\x03\x04")
    assert isinstance(pm.registry("tokenizers").get("hf-json"), TokenizerSpec)
    shout = pm.registry("samplers").get("shout")
    assert isinstance(shout, SamplerSpec) and (shout.kind, shout.plugin, shout.summary) == (
        "sampler",
        "plug_shout",
        "always id 0",
    )
    assert pm.registry("samplers").get("top-k").kind == "processor"


def test_every_builtin_and_installed_plugin_registers_cleanly(monkeypatch):
    monkeypatch.delenv("CCSM_LOAD_PLUGINS", raising=False)
    monkeypatch.delenv("CCSM_DISABLE_PLUGINS", raising=False)
    monkeypatch.setenv("CCSM_STRICT_PLUGINS", "1")  # any registration error raises here
    pm = PluginManager()
    pm.build_all()
    bad = {name: (r.status, r.error) for name, r in pm.records.items() if r.status != "ok"}
    assert not bad
    expected = {
        "ccsm_cpu": {"backends": ["ggml-cpu"]},
        "ccsm_mlx": {"backends": ["mlx"]},
        "ccsm_typical": {"samplers": ["typical-p"]},
        "ccsm_watermark": {"watermarkers": ["ss-stft", "patchwork"]},
    }
    for name, registered in expected.items():
        if importlib.util.find_spec(name) is None:
            continue  # that plugin of this repository is not installed here
        assert pm.records[name].registered == registered, name
    for kind in KINDS:
        for spec in pm.registry(kind):
            assert isinstance(spec, KINDS[kind].spec)
