"""The plugin manager: built-in plugins plus entry points of the group ``ccsm``.

Loading is defensive: a plugin that fails to import or register (whatever it raises,
``SystemExit`` included; see `ccsm_core.plugin_code`), uses an unknown hook, replaces a command
or has malformed metadata (`ccsm_core.plugin_dists`) is recorded as ``failed`` with its cause
and the others keep working. An entry point named like a built-in (``ccsm.*``) or a plugin
shipped with ccsm (`CORE_PLUGINS`) from another distribution is a ``conflict``. Environment
variables:
``CCSM_LOAD_PLUGINS`` (comma list of distributions to load; empty loads none),
``CCSM_DISABLE_PLUGINS`` (comma list of plugin names to skip), ``CCSM_STRICT_PLUGINS=1``
(re-raise plugin errors), ``CCSM_TRACE_PLUGINS=1`` (log registrations to stderr).
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata as md
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, overload

import pluggy

from . import hookspecs, plugin_dists, specs
from .errors import PluginError
from .plugin_code import SigintWatch, fix_hint, reason, where
from .plugin_dists import dist_name, dist_version, incompatible, metadata_problem, normalize
from .registry import Registry
from .specs import BackendSpec, FormatSpec, SamplerSpec, TokenizerSpec, WatermarkerSpec
from .version import __version__

KINDS = tuple(specs.KINDS)  # backends, formats, ...: the kinds of `ccsm_core.specs.KINDS`
BUILTIN_PLUGINS = (
    "ccsm_core.builtin.numpy_backend",
    "ccsm_core.builtin.formats",
    "ccsm_core.builtin.tokenizers",
    "ccsm_core.builtin.samplers",
)


class CorePlugin(NamedTuple):
    """A plugin shipped with ccsm: its entry point belongs to this distribution only."""

    dist: str
    kinds: tuple[str, ...]  # what it provides


CORE_PLUGINS = {
    "ccsm_cpu": CorePlugin("ccsm-cpu", ("backends",)),
    "ccsm_mlx": CorePlugin("ccsm-mlx", ("backends",)),
    "ccsm_onnx": CorePlugin("ccsm-onnx", ("formats",)),
    "ccsm_watermark": CorePlugin("ccsm-watermark", ("watermarkers",)),
}
FAILING = ("failed", "conflict", "incompatible")  # the statuses `ccsm plugins --check` rejects


@dataclass
class PluginRecord:
    """What we know about one plugin, whatever happened to it."""

    name: str
    version: str = ""
    builtin: bool = False
    dist: str = ""
    entry_point: str = ""
    status: str = "ok"  # ok | failed | conflict | incompatible | disabled
    error: str | None = None  # one line
    where: str | None = None  # file:line that raised the error, if it was raised
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)
    kinds: set[str] = field(default_factory=set)  # what it provides or, had it loaded, would

    def as_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "builtin": self.builtin,
            "entry_point": self.entry_point or None,
            "status": self.status,
            "hooks": self.hooks,
            "registered": self.registered,
            "error": self.error,
            "where": self.where,
        }


class Registrar:
    """The ``register`` callable handed to one plugin's ``register_<kind>`` hook: builds the
    kind's spec (`ccsm_core.specs`) from the keywords, so a misspelt keyword or a wrong type
    raises `PluginError` and the plugin is marked failed."""

    def __init__(self, manager: PluginManager, kind: str, plugin: str) -> None:
        self.manager, self.kind, self.plugin = manager, kind, plugin

    def __call__(self, name: str, factory: Any, **keywords: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(
                f"plugin {self.plugin} registered a {self.kind} entry without a name",
                "give every registered entry a name; until then disable the plugin with CCSM_DISABLE_PLUGINS",
            )
        if len(name) > 64 or not name.isprintable() or any(c.isspace() for c in name):
            raise PluginError(
                f"plugin {self.plugin} registered the name {name[:64]!r}: "
                "names are at most 64 printable characters without spaces",
                "register a shorter name without spaces; until then disable the plugin with CCSM_DISABLE_PLUGINS",
            )
        if not callable(factory):
            raise PluginError(
                f"plugin {self.plugin} registered {name!r} with a factory that is not callable",
                "register a callable factory; until then disable the plugin with CCSM_DISABLE_PLUGINS",
            )
        if self.manager.trace:
            print(f"ccsm: {self.plugin} registers {self.kind[:-1]} {name!r}", file=sys.stderr)
        spec = specs.make_spec(self.kind, name, factory, self.plugin, keywords)
        self.manager.registries[self.kind].add(spec)
        self.manager.records[self.plugin].registered.setdefault(self.kind, []).append(name)


class PluginManager:
    """Loads plugins once and builds one `Registry` per kind lazily.

    Nothing a plugin does while it is imported, registered or asked to register (an exception,
    ``SystemExit``, a ``KeyboardInterrupt`` it raises itself, malformed metadata) escapes: the
    plugin is recorded as failed and the others keep working (`ccsm_core.plugin_code`)."""

    def __init__(self, *, entrypoints: bool = True, plugins: tuple[Any, ...] = ()) -> None:
        self.pm = pluggy.PluginManager("ccsm")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.registries: dict[str, Registry[Any]] = {k: Registry(k, self._not_loaded) for k in KINDS}
        self._built: set[str] = set()
        self.strict = os.environ.get("CCSM_STRICT_PLUGINS", "") not in ("", "0")
        self.trace = os.environ.get("CCSM_TRACE_PLUGINS", "") not in ("", "0")
        disabled = {n.strip() for n in os.environ.get("CCSM_DISABLE_PLUGINS", "").split(",") if n.strip()}
        for name in disabled:
            self.pm.set_blocked(name)
        self._disabled = disabled
        for modname in BUILTIN_PLUGINS:
            self._add_builtin(modname)
        for plugin in plugins:
            name = getattr(plugin, "__name__", repr(plugin))
            self._register(plugin, PluginRecord(name=name, version="", dist=name))
        if entrypoints:
            self._load_entrypoints()
        self._check_hooks()
        if self.trace:
            self.pm.trace.root.setwriter(lambda m: print(m, end="", file=sys.stderr))
            self.pm.enable_tracing()

    # -- loading -------------------------------------------------------------------------
    def _add_builtin(self, modname: str) -> None:
        name = "ccsm." + modname.rsplit(".", 1)[1]
        record = PluginRecord(name=name, version=__version__, builtin=True, dist="ccsm")
        if name in self._disabled:
            record.status = "disabled"
            self.records[name] = record
            return
        self.records[name] = record
        module = self._contain(name, importlib.import_module, modname)
        if module is not None:
            self._register(module, record)

    def _contain(self, name: str, fn: Any, /, *args: Any, **kwargs: Any) -> Any:
        """``fn(*args, **kwargs)``, the plugin ``name`` marked failed if it raises anything
        (the user's Ctrl-C excepted); None then. What it prints goes to stderr: stdout carries
        ccsm's own output (``--json``, audio with ``-o -``)."""
        with SigintWatch() as watch, contextlib.redirect_stdout(sys.stderr):
            try:
                return fn(*args, **kwargs)
            except BaseException as e:
                if watch.passes(e):
                    raise
                self._fail(name, e)
                return None

    def _register(self, module: Any, record: PluginRecord) -> None:
        self.records[record.name] = record
        if self._contain(record.name, self.pm.register, module, name=record.name) is None:
            return  # blocked (disabled) or failed
        callers = self._contain(record.name, self.pm.get_hookcallers, module) or ()
        record.hooks = sorted(h.name for h in callers)
        record.kinds |= {k for k, kind in specs.KINDS.items() if kind.hook in record.hooks}

    def _fail(self, name: str, error: BaseException | str, status: str = "failed") -> None:
        rec = self.records[name]
        rec.status = status
        rec.error = error if isinstance(error, str) else reason(error)
        rec.where = None if isinstance(error, str) else where(error)
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        for reg in self.registries.values():
            reg.drop_plugin(name)
        rec.registered = {}
        if self.strict and isinstance(error, Exception):
            raise error
        if self.strict:
            raise PluginError(f"plugin {name}: {rec.error}", fix_hint(name)) from (
                None if isinstance(error, str) else error
            )

    def _load_entrypoints(self) -> None:
        wanted = os.environ.get("CCSM_LOAD_PLUGINS")
        wanted_set = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        found, broken = plugin_dists.entry_points()
        for b in broken:
            self.records[b.dist] = PluginRecord(
                name=b.dist, version=b.version, dist=b.dist, status="failed", error=b.problem
            )
        seen: dict[str, list[md.EntryPoint]] = {}
        for ep in found:
            group = seen.setdefault(str(ep.name), [])
            if not any(_same_dist(o, ep) for o in group):
                group.append(ep)
        for name, eps in sorted(seen.items()):
            with SigintWatch() as watch:
                try:
                    self._load_entrypoint(name, eps, wanted_set)
                except BaseException as e:
                    if watch.passes(e) or (self.strict and isinstance(e, Exception)):
                        raise
                    key = name if name not in self.records else f"{name} ({dist_name(eps[0])})"
                    self.records[key] = PluginRecord(name=key, dist=dist_name(eps[0]), status="failed", error=reason(e))

    def _load_entrypoint(self, name: str, eps: list[md.EntryPoint], wanted: set[str] | None) -> None:
        """Record the plugin behind the entry point ``name`` and load it if all is well."""
        owner = _owner(name)
        dists = [dist_name(ep) for ep in eps]
        foreign = owner is not None and any(normalize(d) != normalize(owner) for d in dists)
        taken = name in self.records  # by a plugin given directly or a broken distribution
        if len(eps) > 1 or foreign or taken:
            claimants = " and ".join(sorted({*dists, *([owner] if foreign and owner else [])}, key=normalize))
            if foreign:
                problem = f"entry point {name!r} is provided by {claimants}; the name belongs to {owner}"
            elif len(eps) > 1:
                problem = f"entry point {name!r} is provided by {claimants}"
            else:
                problem = f"another plugin is already called {name!r}"
            for ep in eps:
                key = f"{name} ({dist_name(ep)})"
                self.records[key] = PluginRecord(
                    name=key,
                    version=dist_version(ep),
                    dist=dist_name(ep),
                    entry_point=f"{ep.name} = {ep.value}",
                    status="conflict",
                    error=problem,
                    kinds=set(CORE_PLUGINS[name].kinds) if name in CORE_PLUGINS else set(),
                )
            return
        ep = eps[0]
        record = PluginRecord(
            name=name,
            version=dist_version(ep),
            dist=dist_name(ep),
            entry_point=f"{ep.name} = {ep.value}",
            kinds=set(CORE_PLUGINS[name].kinds) if name in CORE_PLUGINS else set(),
        )
        self.records[name] = record
        if name in self._disabled or (wanted is not None and record.dist not in wanted and name not in wanted):
            record.status = "disabled"
            return
        unusable = metadata_problem(ep)
        if unusable:
            self._fail(name, unusable)
            return
        bad = incompatible(ep)
        if bad:
            record.status, record.error = "incompatible", bad
            return
        module = self._contain(name, ep.load)
        if module is not None:
            self._register(module, record)

    def _check_hooks(self) -> None:
        known = {n for n in dir(hookspecs) if n.startswith("register_")}
        for name, rec in list(self.records.items()):
            plugin = self.pm.get_plugin(name)
            if plugin is None or rec.status != "ok":
                continue
            unknown = self._contain(name, _unknown_hook, plugin, known)
            if unknown:
                self._fail(name, unknown)

    # -- registries ----------------------------------------------------------------------
    @overload
    def registry(self, kind: Literal["backends"]) -> Registry[BackendSpec]: ...
    @overload
    def registry(self, kind: Literal["formats"]) -> Registry[FormatSpec]: ...
    @overload
    def registry(self, kind: Literal["tokenizers"]) -> Registry[TokenizerSpec]: ...
    @overload
    def registry(self, kind: Literal["samplers"]) -> Registry[SamplerSpec]: ...
    @overload
    def registry(self, kind: Literal["watermarkers"]) -> Registry[WatermarkerSpec]: ...
    @overload
    def registry(self, kind: str) -> Registry[Any]: ...

    def registry(self, kind: str) -> Registry[Any]:
        """The registry of ``kind``, calling every plugin's ``register_<kind>`` on first use."""
        if kind not in self.registries:
            raise PluginError(f"unknown plugin kind {kind!r}", f"one of {', '.join(KINDS)}")
        if kind not in self._built:
            self._built.add(kind)
            caller = getattr(self.pm.hook, specs.KINDS[kind].hook)
            for impl in reversed(caller.get_hookimpls()):
                self._contain(impl.plugin_name, impl.function, register=Registrar(self, kind, impl.plugin_name))
        return self.registries[kind]

    def build_all(self) -> None:
        for kind in KINDS:
            self.registry(kind)

    def _not_loaded(self, kind: str) -> list[str]:
        """``name (status)`` of the plugins that failed, conflict or are incompatible and
        provide ``kind`` (or might: those that failed before registering anything)."""
        return [
            f"{r.name} ({r.status})"
            for r in self.records.values()
            if r.status in FAILING and (kind in r.kinds or not r.kinds)
        ]

    def unusable(self, kind: str) -> list[PluginRecord]:
        """The plugins that provide ``kind`` (or would, had they loaded) but are not ``ok``."""
        self.registry(kind)
        return [r for r in self.records.values() if kind in r.kinds and r.status != "ok"]

    def add_commands(self, cli: Any) -> None:
        """Let every plugin add its commands; one that replaces an existing command (a core
        one or another plugin's) is failed and the command kept as it was."""
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            before = dict(cli.commands)
            self._contain(impl.plugin_name, impl.function, cli=cli)
            added = [n for n in cli.commands if n not in before]
            replaced = [n for n in before if cli.commands.get(n) is not before[n]]
            rec = self.records[impl.plugin_name]
            if replaced and rec.status == "ok":
                self._fail(
                    impl.plugin_name, f"it replaces the command {replaced[0]!r}, which ccsm or another plugin provides"
                )
            if rec.status != "ok":
                cli.commands.clear()
                cli.commands.update(before)
            elif added:
                rec.registered["commands"] = added


def _unknown_hook(plugin: Any, known: set[str]) -> str | None:
    """``unknown hook 'x' - did you mean y?`` for a hook implementation of no known hook."""
    for attr in dir(plugin):
        fn = getattr(plugin, attr, None)
        if attr in known or not hasattr(fn, "ccsm_impl"):
            continue
        close = difflib.get_close_matches(attr, known, n=1)
        hint = f" - did you mean {close[0]}?" if close else ""
        return f"unknown hook {attr!r}{hint}"
    return None


def _owner(name: str) -> str | None:
    """The distribution an entry point called ``name`` belongs to: ``ccsm`` for a built-in's
    name, the core plugin's distribution for its name; None for any other name."""
    if name.startswith("ccsm."):
        return "ccsm"
    core = CORE_PLUGINS.get(name)
    return core.dist if core is not None else None


def _same_dist(a: Any, b: Any) -> bool:
    return normalize(dist_name(a)) == normalize(dist_name(b))


_manager: PluginManager | None = None


def get_plugin_manager() -> PluginManager:
    """The process-wide manager, created on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
    return _manager


def reset_plugin_manager() -> None:
    """Forget the process-wide manager (tests, or after installing a plugin)."""
    global _manager
    _manager = None


@overload
def registry(kind: Literal["backends"]) -> Registry[BackendSpec]: ...
@overload
def registry(kind: Literal["formats"]) -> Registry[FormatSpec]: ...
@overload
def registry(kind: Literal["tokenizers"]) -> Registry[TokenizerSpec]: ...
@overload
def registry(kind: Literal["samplers"]) -> Registry[SamplerSpec]: ...
@overload
def registry(kind: Literal["watermarkers"]) -> Registry[WatermarkerSpec]: ...
@overload
def registry(kind: str) -> Registry[Any]: ...


def registry(kind: str) -> Registry[Any]:
    """The registry of ``kind`` in the process-wide manager: its specs by name."""
    return get_plugin_manager().registry(kind)
