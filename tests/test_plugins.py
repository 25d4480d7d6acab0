"""The plugin loader with throwaway plugins and fake distributions."""

from __future__ import annotations

import json
import types

import pytest

from ccsm_core import hookimpl
from ccsm_core.cli import cli
from ccsm_core.errors import PluginError
from ccsm_core.plugins import PluginManager


class FakeDist:
    def __init__(self, name: str, version: str = "1.0", requires: list[str] | None = None) -> None:
        self.metadata = {"Name": name}
        self.version = version
        self.requires = requires or []


class FakeEP:
    def __init__(self, name: str, module: object, dist: str, requires: list[str] | None = None) -> None:
        self.name, self.value, self.group = name, f"{name}.plugin", "ccsm"
        self._module = module
        self.dist = FakeDist(dist, requires=requires)

    def load(self):
        if isinstance(self._module, BaseException):
            raise self._module
        return self._module


def module(name: str, **hooks) -> types.ModuleType:
    mod = types.ModuleType(name)
    for hook_name, fn in hooks.items():
        fn.__name__ = hook_name
        setattr(mod, hook_name, hookimpl(fn))
    return mod


def sampler_plugin(name: str = "shout") -> types.ModuleType:
    def register_samplers(register):
        register(name, lambda: lambda lp, rng: 0, kind="sampler", summary="always id 0")

    return module(f"plug_{name}", register_samplers=register_samplers)


@pytest.fixture
def with_eps(monkeypatch):
    def install(*eps: FakeEP) -> PluginManager:
        monkeypatch.setattr("ccsm_core.plugins.md.entry_points", lambda group: list(eps))
        monkeypatch.setattr("ccsm_core.plugins._manager", None)
        from ccsm_core.plugins import get_plugin_manager

        return get_plugin_manager()

    yield install
    monkeypatch.setattr("ccsm_core.plugins._manager", None)


def test_builtins_register_through_hooks(plugin_manager):
    pm = plugin_manager()
    assert "numpy" in pm.registry("backends")
    assert {"greedy", "categorical", "top-k", "top-p", "min-p", "temperature"} <= set(pm.registry("samplers").names())
    assert {"hf-json", "sentencepiece"} <= set(pm.registry("tokenizers").names())
    assert all(r.status == "ok" for r in pm.records.values() if r.builtin)


def test_ok_plugin(with_eps):
    pm = with_eps(FakeEP("acme", sampler_plugin(), "acme-sampler"))
    assert pm.registry("samplers").get("shout").plugin == "acme"
    rec = pm.records["acme"]
    assert (rec.status, rec.dist, rec.registered) == ("ok", "acme-sampler", {"samplers": ["shout"]})
    assert rec.hooks == ["register_samplers"]


def test_import_error_is_recorded_and_others_work(with_eps):
    pm = with_eps(
        FakeEP("broken", ImportError("No module named 'missing'"), "broken-dist"),
        FakeEP("acme", sampler_plugin(), "acme-sampler"),
    )
    assert pm.records["broken"].status == "failed"
    assert "ImportError: No module named 'missing'" in pm.records["broken"].error
    assert "shout" in pm.registry("samplers")


def test_raising_hook_drops_partial_registration(with_eps):
    def register_samplers(register):
        register("half", lambda: lambda lp, rng: 0, kind="sampler")
        raise RuntimeError("boom")

    pm = with_eps(
        FakeEP("raiser", module("raiser", register_samplers=register_samplers), "raiser"),
        FakeEP("acme", sampler_plugin(), "acme-sampler"),
    )
    reg = pm.registry("samplers")
    assert "half" not in reg and "shout" in reg
    assert pm.records["raiser"].status == "failed"
    assert pm.records["raiser"].error == "RuntimeError: boom"


def test_duplicate_registered_name_names_both(with_eps):
    pm = with_eps(FakeEP("one", sampler_plugin("dup"), "one-dist"), FakeEP("two", sampler_plugin("dup"), "two-dist"))
    with pytest.raises(PluginError) as e:
        pm.registry("samplers").get("dup")
    assert "one" in str(e.value) and "two" in str(e.value)


def test_duplicate_entry_point_name_is_conflict(with_eps):
    pm = with_eps(FakeEP("same", sampler_plugin("a"), "dist-a"), FakeEP("same", sampler_plugin("b"), "dist-b"))
    conflicts = [r for r in pm.records.values() if r.status == "conflict"]
    assert len(conflicts) == 2
    assert all("dist-a and dist-b" in r.error for r in conflicts)
    assert "a" not in pm.registry("samplers") and "b" not in pm.registry("samplers")


def test_misspelled_hook_fails_with_suggestion(with_eps):
    def register_sampler(register):  # missing the final "s"
        register("x", lambda: None, kind="sampler")

    pm = with_eps(FakeEP("typo", module("typo", register_sampler=register_sampler), "typo"))
    rec = pm.records["typo"]
    assert rec.status == "failed"
    assert "register_sampler" in rec.error and "did you mean register_samplers" in rec.error


def test_incompatible_version_is_not_imported(with_eps):
    loaded = []

    class Lazy(FakeEP):
        def load(self):
            loaded.append(True)
            return super().load()

    pm = with_eps(Lazy("old", sampler_plugin("old"), "old-plugin", requires=["ccsm<0.1"]))
    assert pm.records["old"].status == "incompatible"
    assert "needs ccsm<0.1" in pm.records["old"].error
    assert not loaded


def test_load_plugins_empty_loads_none(with_eps, monkeypatch):
    monkeypatch.setenv("CCSM_LOAD_PLUGINS", "")
    pm = with_eps(FakeEP("acme", sampler_plugin(), "acme-sampler"))
    assert pm.records["acme"].status == "disabled"
    assert "shout" not in pm.registry("samplers")


def test_disable_plugin(with_eps, monkeypatch, cli_runner):
    monkeypatch.setenv("CCSM_DISABLE_PLUGINS", "acme")
    pm = with_eps(FakeEP("acme", sampler_plugin(), "acme-sampler"))
    assert pm.records["acme"].status == "disabled"
    res = cli_runner.invoke(cli, ["plugins"])  # a disabled plugin has no error to show
    assert res.exit_code == 0, res.output
    assert "disabled" in res.output


def test_strict_mode_raises(with_eps, monkeypatch):
    monkeypatch.setenv("CCSM_STRICT_PLUGINS", "1")
    with pytest.raises(ImportError):
        with_eps(FakeEP("broken", ImportError("nope"), "broken"))


def test_cli_keeps_working_and_reports_failure(with_eps, cli_runner):
    with_eps(
        FakeEP("broken", ImportError("No module named 'zzz'"), "broken-dist"),
        FakeEP("acme", sampler_plugin(), "acme-sampler"),
    )
    res = cli_runner.invoke(cli, ["plugins"])
    assert res.exit_code == 0, res.output
    assert "failed" in res.output and "No module named 'zzz'" in res.output
    res = cli_runner.invoke(cli, ["plugins", "--json"])
    recs = {r["name"]: r for r in json.loads(res.output)}
    assert recs["broken"]["status"] == "failed"
    assert recs["acme"]["registered"] == {"samplers": ["shout"]}
    assert recs["ccsm.numpy_backend"]["builtin"] is True
    assert cli_runner.invoke(cli, ["plugins", "--check"]).exit_code == 1
    res = cli_runner.invoke(cli, ["plugins", "--json", "--hook", "register_samplers"])
    assert {r["name"] for r in json.loads(res.output)} == {"ccsm.samplers", "acme"}


def test_plugin_commands_are_added(with_eps, cli_runner):
    import click

    def register_commands(cli):
        @cli.command()
        def hello():
            """Say hello."""
            click.echo("hello from plugin")

    with_eps(FakeEP("cmd", module("cmd", register_commands=register_commands), "cmd-dist"))
    from ccsm_core.cli import CcsmGroup

    group = CcsmGroup(name="ccsm", commands=dict(cli.commands))
    res = cli_runner.invoke(group, ["hello"])
    assert res.output == "hello from plugin\n"


def test_backends_command(cli_runner, with_eps):
    def register_backends(register):
        register("ghost", lambda **o: None, priority=99, available=lambda: "ghost library not found")

    with_eps(FakeEP("ghost", module("ghost", register_backends=register_backends), "ghost"))
    res = cli_runner.invoke(cli, ["backends", "--json"])
    rows = {r["name"]: r for r in json.loads(res.output)}
    assert rows["numpy"]["available"] is True
    assert rows["ghost"] == {**rows["ghost"], "available": False, "reason": "ghost library not found"}
    from ccsm_core.backends import default_backend_name, get_backend
    from ccsm_core.errors import BackendUnavailable

    assert default_backend_name() == "numpy"  # the unavailable one is skipped despite priority
    with pytest.raises(BackendUnavailable, match="ghost library not found"):
        get_backend("ghost")


def test_misspelt_register_keyword_fails_the_plugin_in_ccsm_plugins(with_eps, cli_runner):
    def register_backends(register):
        register("ghost", lambda **o: None, priorty=99)

    pm = with_eps(
        FakeEP("typo", module("typo", register_backends=register_backends), "typo-dist"),
        FakeEP("acme", sampler_plugin(), "acme-sampler"),
    )
    res = cli_runner.invoke(cli, ["plugins"])
    assert res.exit_code == 0, res.output
    rec = pm.records["typo"]
    assert rec.status == "failed" and "did you mean 'priority'?" in rec.error
    assert "failed" in res.output and "did you mean 'priority'?" in res.output
    assert pm.records["acme"].status == "ok" and "shout" in pm.registry("samplers")
    assert "ghost" not in pm.registry("backends")
    assert cli_runner.invoke(cli, ["plugins", "--check"]).exit_code == 1


def test_wrong_register_type_fails_the_plugin(with_eps):
    def register_samplers(register):
        register("loud", lambda: lambda lp, rng: 0, kind="sampler", summary=["not", "a", "str"])

    pm = with_eps(FakeEP("typed", module("typed", register_samplers=register_samplers), "typed-dist"))
    assert "loud" not in pm.registry("samplers")
    rec = pm.records["typed"]
    assert rec.status == "failed"
    assert rec.error == ("PluginError: register_samplers: 'loud': summary must be str, got ['not', 'a', 'str'] (list)")
