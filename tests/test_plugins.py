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


# -- containment of plugin code (in process; tests/test_plugin_isolation.py runs the real CLI) --


def test_keyboard_interrupt_raised_by_plugin_code_is_contained_but_a_real_sigint_passes():
    import os
    import signal

    from ccsm_core.plugin_code import guarded

    with pytest.raises(PluginError, match="plugin acme: the factory of thing 'x' raised KeyboardInterrupt"):
        with guarded("acme", "the factory of thing 'x'"):
            raise KeyboardInterrupt
    with pytest.raises(KeyboardInterrupt):
        with guarded("acme", "the factory of thing 'x'"):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # the handler runs between bytecodes
                pass
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_guarded_lets_ccsm_errors_and_file_errors_through():
    from ccsm_core.errors import UsageError
    from ccsm_core.plugin_code import guarded

    with pytest.raises(UsageError, match="bad threads"):
        with guarded("acme", "x"):
            raise UsageError("bad threads")
    with pytest.raises(FileNotFoundError):
        with guarded("acme", "x"):
            open("/nonexistent/file")
    with pytest.raises(PluginError, match="^plugin acme: x raised SystemExit: 2$") as e:
        with guarded("acme", "x"):
            raise SystemExit(2)
    assert "CCSM_DISABLE_PLUGINS=acme" in e.value.one_line()


def test_format_factory_failures_name_the_plugin(plugin_manager, tmp_path):
    from ccsm_core.loading.weights import open_weights

    def register_formats(register):
        register("exit", lambda p, validate=True: exec("raise SystemExit(1)"), suffixes=(".exit",))
        register("none", lambda p, validate=True: None, suffixes=(".none",))
        register("picky", lambda p, validate=True: None, suffixes=(".picky",), sniff=lambda b: 1 / 0)

    plugin_manager([module("fmt", register_formats=register_formats)])
    for suffix, problem in (("exit", "raised SystemExit: 1"), ("none", "returned NoneType for")):
        (tmp_path / f"w.{suffix}").write_bytes(b"x" * 8)
        with pytest.raises(PluginError, match=f"plugin fmt: the factory of format '{suffix}' {problem}"):
            open_weights(tmp_path / f"w.{suffix}")
    (tmp_path / "w.picky").write_bytes(b"x" * 8)  # a raising sniff claims nothing; the suffix decides
    with pytest.raises(PluginError, match="format 'picky' returned NoneType"):
        open_weights(tmp_path / "w.picky")


def test_tokenizer_failures_name_the_plugin(plugin_manager, tmp_path):
    from ccsm_core.tokenizers import load_tokenizer

    def register_tokenizers(register):
        register("empty", lambda source: None)
        register("gen", lambda source: exec("raise GeneratorExit"), sniff=lambda s: str(s).endswith(".gen"))

    plugin_manager([module("tok", register_tokenizers=register_tokenizers)])
    with pytest.raises(
        PluginError, match="plugin tok: the factory of tokenizer 'empty' returned NoneType, which lacks"
    ):
        load_tokenizer("whatever", name="empty")
    (tmp_path / "v.gen").write_text("x")
    with pytest.raises(PluginError, match="the factory of tokenizer 'gen' raised GeneratorExit"):
        load_tokenizer(tmp_path / "v.gen")


def test_watermark_stream_failures_name_the_plugin(plugin_manager):
    import numpy as np

    from ccsm_core.watermark import pick_watermarker

    class Stream:
        def push(self, block):
            raise SystemExit(1)

        def flush(self):
            return np.zeros((2, 2), np.float32)

    class Marker:
        def embed(self, audio, rate, payload):
            return audio

        def stream(self, rate, payload):
            return Stream()

    def register_watermarkers(register):
        register("m", lambda key: Marker(), payload_bits=4, public_key=b"k", default=True)

    plugin_manager([module("wm", register_watermarkers=register_watermarkers)])
    stream = pick_watermarker().stream(24000)
    with pytest.raises(PluginError, match=r"plugin wm: the stream's push\(\) of watermark 'm' raised SystemExit: 1"):
        stream.push(np.zeros(10, np.float32))
    with pytest.raises(PluginError, match=r"flush\(\) of watermark 'm' returned an array of shape \(2, 2\)") as e:
        stream.flush()
    assert "--no-watermark" in e.value.hint
    Marker.embed = lambda self, audio, rate, payload: audio * np.nan
    with pytest.raises(PluginError, match=r"the embed\(\) of watermark 'm' returned audio with NaN"):
        pick_watermarker().embed(np.zeros(10, np.float32), 24000)


def test_unreadable_entry_points_fall_back_to_each_distribution(monkeypatch):
    import importlib.metadata as md

    class Dist:
        def __init__(self, name, text):
            self.metadata, self.version, self.requires, self.text = {"Name": name}, "1.0", [], text

        def read_text(self, filename):
            if isinstance(self.text, bytes):
                self.text.decode()
            return self.text

        @property
        def entry_points(self):
            if "=" not in self.text:
                raise TypeError("Pair.__new__() missing 1 required positional argument: 'value'")
            return [FakeEP("good", sampler_plugin("fine"), "good-dist")]

    def broken_listing(group):
        raise TypeError("Pair.__new__() missing 1 required positional argument: 'value'")

    dists = [Dist("broken-dist", "[ccsm]\nbroken\n"), Dist("other-dist", "[console_scripts]\nx\n"), Dist("good", "=")]
    monkeypatch.setattr(md, "entry_points", broken_listing)
    monkeypatch.setattr(md, "distributions", lambda: dists)
    monkeypatch.setattr("ccsm_core.plugins._manager", None)
    pm = PluginManager()
    assert pm.records["broken-dist"].status == "failed"
    assert "entry_points.txt is malformed" in pm.records["broken-dist"].error
    assert "other-dist" not in pm.records  # not a ccsm plugin: none of ours to report
    assert pm.records["good"].status == "ok" and "fine" in pm.registry("samplers")


def test_requirement_markers_and_names_are_read_with_care(with_eps):
    pm = with_eps(
        FakeEP("extra", sampler_plugin("e"), "extra-dist", requires=['ccsm<0.1; extra == "old"', "ccsm-cpu>=9"]),
        FakeEP("bad", sampler_plugin("b"), "bad-dist", requires=["ccsm >=>= 0.1"]),
    )
    assert pm.records["extra"].status == "ok"  # the requirement applies to an extra only
    assert pm.records["bad"].status == "failed" and "is malformed" in pm.records["bad"].error


def test_entry_point_named_like_a_plugin_given_directly_is_a_conflict(monkeypatch):
    given = sampler_plugin("mine")
    given.__name__ = "acme"
    monkeypatch.setattr("ccsm_core.plugins.md.entry_points", lambda group: [FakeEP("acme", sampler_plugin(), "acme")])
    pm = PluginManager(plugins=(given,))
    assert pm.records["acme"].status == "ok" and "mine" in pm.registry("samplers")
    assert pm.records["acme (acme)"].status == "conflict"


def test_third_party_sampler_raising_while_generating_names_the_plugin(plugin_manager):
    import numpy as np

    from ccsm_core.sampling import build_sampler

    def processor(how):
        def run(tokens, logits):
            raise how

        return run

    def register_samplers(register):
        register("exits", lambda: processor(SystemExit(1)), kind="processor")
        register("stops", lambda: processor(KeyboardInterrupt()), kind="processor")
        register("nothing", lambda: None, kind="processor")

    plugin_manager([module("procs", register_samplers=register_samplers)])
    rng, logits = np.random.default_rng(0), np.zeros(4, np.float32)
    chain = build_sampler(temperature=0, extra=[("exits", {})])
    with pytest.raises(PluginError, match="plugin procs: sampler 'exits' raised SystemExit: 1"):
        chain(np.zeros(0, np.int64), logits, rng)
    with pytest.raises(KeyboardInterrupt):  # taken for the user's Ctrl-C while generating
        build_sampler(temperature=0, extra=[("stops", {})])(np.zeros(0, np.int64), logits, rng)
    with pytest.raises(PluginError, match="the factory of sampler 'nothing' returned NoneType, not a callable"):
        build_sampler(temperature=0, extra=[("nothing", {})])


def test_strict_mode_turns_base_exceptions_into_plugin_errors(with_eps, monkeypatch):
    monkeypatch.setenv("CCSM_STRICT_PLUGINS", "1")
    with pytest.raises(PluginError, match="plugin exiting: SystemExit: 3") as e:
        with_eps(FakeEP("exiting", SystemExit(3), "exiting"))
    assert isinstance(e.value.__cause__, SystemExit)


def test_unknown_name_hint_lists_the_plugins_not_loaded(with_eps):
    pm = with_eps(FakeEP("ccsm_cpu", ImportError("libggml.so: cannot open"), "ccsm-cpu"))
    with pytest.raises(PluginError, match="unknown backend 'ggml-cpu'") as e:
        pm.registry("backends").get("ggml-cpu")
    assert "not loaded: ccsm_cpu (failed)" in e.value.hint


@pytest.mark.parametrize("name", ["two words", "line\nbreak", "x" * 65, "tab\there"])
def test_registered_names_are_plain(with_eps, name):
    def register_samplers(register):
        register(name, lambda: lambda lp, rng: 0, kind="sampler")

    pm = with_eps(FakeEP("names", module("names", register_samplers=register_samplers), "names"))
    pm.registry("samplers")
    assert pm.records["names"].status == "failed" and "printable characters without spaces" in pm.records["names"].error


def test_any_distribution_metadata_leaves_the_cli_working(monkeypatch, cli_runner):
    """Property: whatever names, values, versions and requirements the entry points carry, the
    manager is built, every entry point has a record, and `ccsm plugins` prints its table."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
    requirement = st.one_of(text, text.map(lambda t: "ccsm" + t))
    name = st.one_of(text, st.sampled_from(["ccsm.formats", "ccsm_watermark", "acme", ""]))
    entry = st.tuples(name, text, st.one_of(st.none(), text), st.lists(requirement, max_size=3))

    class Dist:
        def __init__(self, name, version, requires):
            self.metadata, self.version, self.requires = {"Name": name}, version, requires

    class EP:
        group = "ccsm"

        def __init__(self, i, name, value, version, requires):
            self.name, self.value, self.dist = name, value, Dist(f"d{i}-{name}", version, requires)

        def load(self):
            return sampler_plugin(f"s{abs(hash(self.name))}")

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
    @given(st.lists(entry, max_size=4))
    def check(entries):
        eps = [EP(i, *e) for i, e in enumerate(entries)]
        monkeypatch.setattr("ccsm_core.plugins.md.entry_points", lambda group: eps)
        monkeypatch.setattr("ccsm_core.plugins._manager", None)
        from ccsm_core.plugins import get_plugin_manager

        pm = get_plugin_manager()
        pm.build_all()
        shown = {r.entry_point for r in pm.records.values()}
        assert all(f"{ep.name} = {ep.value}" in shown for ep in eps)
        res = cli_runner.invoke(cli, ["plugins"])
        assert res.exit_code == 0 and res.exception is None, res.output

    check()
