"""The plugin manager: built-in plugins plus entry points of the group ``ccsm``.

Loading is defensive: a plugin that fails to import, register or that uses an unknown hook is
recorded as ``failed`` with its cause and the others keep working. Environment variables:
``CCSM_LOAD_PLUGINS`` (comma list of distributions to load; empty loads none),
``CCSM_DISABLE_PLUGINS`` (comma list of plugin names to skip), ``CCSM_STRICT_PLUGINS=1``
(re-raise plugin errors), ``CCSM_TRACE_PLUGINS=1`` (log registrations to stderr).
"""

from __future__ import annotations

import difflib
import importlib
import importlib.metadata as md
import os
import sys
from dataclasses import dataclass, field
from typing import Any, Literal, overload

import pluggy

from . import hookspecs, specs
from .errors import PluginError
from .registry import Registry
from .specs import BackendSpec, FormatSpec, SamplerSpec, TokenizerSpec, WatermarkerSpec
from .version import __version__

GROUP = "ccsm"
KINDS = tuple(specs.KINDS)  # backends, formats, ...: the kinds of `ccsm_core.specs.KINDS`
BUILTIN_PLUGINS = (
    "ccsm_core.builtin.numpy_backend",
    "ccsm_core.builtin.formats",
    "ccsm_core.builtin.tokenizers",
    "ccsm_core.builtin.samplers",
)


@dataclass
class PluginRecord:
    """What we know about one plugin, whatever happened to it."""

    name: str
    version: str = ""
    builtin: bool = False
    dist: str = ""
    entry_point: str = ""
    status: str = "ok"  # ok | failed | conflict | incompatible | disabled
    error: str | None = None
    hooks: list[str] = field(default_factory=list)
    registered: dict[str, list[str]] = field(default_factory=dict)

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
        }


class Registrar:
    """The ``register`` callable handed to one plugin's ``register_<kind>`` hook: builds the
    kind's spec (`ccsm_core.specs`) from the keywords, so a misspelt keyword or a wrong type
    raises `PluginError` and the plugin is marked failed."""

    def __init__(self, manager: PluginManager, kind: str, plugin: str) -> None:
        self.manager, self.kind, self.plugin = manager, kind, plugin

    def __call__(self, name: str, factory: Any, **keywords: Any) -> None:
        if not isinstance(name, str) or not name:
            raise PluginError(f"plugin {self.plugin} registered a {self.kind} entry without a name")
        if not callable(factory):
            raise PluginError(f"plugin {self.plugin} registered {name!r} with a factory that is not callable")
        if self.manager.trace:
            print(f"ccsm: {self.plugin} registers {self.kind[:-1]} {name!r}", file=sys.stderr)
        spec = specs.make_spec(self.kind, name, factory, self.plugin, keywords)
        self.manager.registries[self.kind].add(spec)
        self.manager.records[self.plugin].registered.setdefault(self.kind, []).append(name)


class PluginManager:
    """Loads plugins once and builds one `Registry` per kind lazily."""

    def __init__(self, *, entrypoints: bool = True, plugins: tuple[Any, ...] = ()) -> None:
        self.pm = pluggy.PluginManager("ccsm")
        self.pm.add_hookspecs(hookspecs)
        self.records: dict[str, PluginRecord] = {}
        self.registries: dict[str, Registry[Any]] = {k: Registry(k) for k in KINDS}
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
        self._register(importlib.import_module(modname), record)

    def _register(self, module: Any, record: PluginRecord) -> None:
        self.records[record.name] = record
        try:
            self.pm.register(module, name=record.name)
        except Exception as e:  # pluggy validation errors, wrong signatures
            self._fail(record.name, e)
            return
        record.hooks = sorted(h.name for h in self.pm.get_hookcallers(module) or ())

    def _fail(self, name: str, error: BaseException | str, status: str = "failed") -> None:
        rec = self.records[name]
        rec.status = status
        rec.error = error if isinstance(error, str) else f"{type(error).__name__}: {error}"
        if self.pm.get_plugin(name) is not None:
            self.pm.unregister(name=name)
        for reg in self.registries.values():
            reg.drop_plugin(name)
        rec.registered = {}
        if self.strict and not isinstance(error, str):
            raise error
        if self.strict:
            raise PluginError(f"plugin {name}: {rec.error}")

    def _load_entrypoints(self) -> None:
        wanted = os.environ.get("CCSM_LOAD_PLUGINS")
        wanted_set = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
        seen: dict[str, list[md.EntryPoint]] = {}
        for ep in md.entry_points(group=GROUP):
            group = seen.setdefault(ep.name, [])
            if not any(_dist_name(o) == _dist_name(ep) for o in group):
                group.append(ep)
        for name, eps in sorted(seen.items()):
            if len(eps) > 1:
                dists = " and ".join(_dist_name(e) for e in eps)
                for ep in eps:
                    key = f"{name} ({_dist_name(ep)})"
                    self.records[key] = PluginRecord(
                        name=key,
                        version=_dist_version(ep),
                        dist=_dist_name(ep),
                        entry_point=f"{ep.name} = {ep.value}",
                        status="conflict",
                        error=f"entry point {name!r} is provided by {dists}",
                    )
                continue
            ep = eps[0]
            record = PluginRecord(
                name=name, version=_dist_version(ep), dist=_dist_name(ep), entry_point=f"{ep.name} = {ep.value}"
            )
            self.records[name] = record
            if name in self._disabled or (
                wanted_set is not None and record.dist not in wanted_set and name not in wanted_set
            ):
                record.status = "disabled"
                continue
            bad = _incompatible(ep)
            if bad:
                record.status, record.error = "incompatible", bad
                continue
            try:
                module = ep.load()
            except Exception as e:
                self._fail(name, e)
                continue
            self._register(module, record)

    def _check_hooks(self) -> None:
        known = {n for n in dir(hookspecs) if n.startswith("register_")}
        for name, rec in list(self.records.items()):
            plugin = self.pm.get_plugin(name)
            if plugin is None or rec.status != "ok":
                continue
            for attr in dir(plugin):
                fn = getattr(plugin, attr, None)
                if attr in known or not hasattr(fn, "ccsm_impl"):
                    continue
                close = difflib.get_close_matches(attr, known, n=1)
                hint = f" - did you mean {close[0]}?" if close else ""
                self._fail(name, f"unknown hook {attr!r}{hint}")
                break

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
                try:
                    impl.function(register=Registrar(self, kind, impl.plugin_name))
                except Exception as e:
                    self._fail(impl.plugin_name, e)
        return self.registries[kind]

    def build_all(self) -> None:
        for kind in KINDS:
            self.registry(kind)

    def add_commands(self, cli: Any) -> None:
        for impl in reversed(self.pm.hook.register_commands.get_hookimpls()):
            try:
                impl.function(cli=cli)
            except Exception as e:
                self._fail(impl.plugin_name, e)


def _dist_name(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.metadata["Name"] if dist is not None else ep.value.split(".")[0]


def _dist_version(ep: md.EntryPoint) -> str:
    dist = getattr(ep, "dist", None)
    return dist.version if dist is not None else ""


def _incompatible(ep: md.EntryPoint) -> str | None:
    """A reason if the plugin's ``Requires-Dist: ccsm ...`` excludes this ccsm version."""
    dist = getattr(ep, "dist", None)
    for req in (dist.requires or []) if dist is not None else []:
        if not req.lower().startswith("ccsm") or req.lower().startswith(("ccsm-", "ccsm_")):
            continue
        from packaging.requirements import Requirement
        from packaging.version import Version

        r = Requirement(req)
        if (
            r.name.lower() == "ccsm"
            and r.marker is None
            and r.specifier
            and not r.specifier.contains(Version(__version__), prereleases=True)
        ):
            return f"needs ccsm{r.specifier}, this is ccsm {__version__}"
    return None


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
