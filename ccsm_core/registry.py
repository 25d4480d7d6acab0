"""Named registries of what plugins provide (backends, formats, samplers, ...)."""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterator
from typing import Any, Generic, TypeVar

from .errors import PluginError
from .plugin_code import guarded
from .specs import Spec

S = TypeVar("S", bound=Spec)


class Registry(Generic[S]):
    """The specs of one kind, by name. Two plugins registering one name make that name a conflict."""

    def __init__(self, kind: str, not_loaded: Callable[[str], list[str]] | None = None) -> None:
        self.kind = kind
        self._entries: dict[str, S] = {}
        # "name (status)" of the plugins that are not loaded: an unknown name may be theirs
        self._not_loaded = not_loaded or (lambda kind: [])

    def add(self, entry: S) -> None:
        old = self._entries.get(entry.name)
        if old is not None and old.plugin != entry.plugin:
            old.conflict_with.append(entry.plugin)
            return
        self._entries[entry.name] = entry

    def drop_plugin(self, plugin: str) -> None:
        """Forget everything ``plugin`` registered (after it failed half-way)."""
        self._entries = {k: e for k, e in self._entries.items() if e.plugin != plugin}

    def names(self) -> list[str]:
        return list(self._entries)

    def __iter__(self) -> Iterator[S]:
        return iter(self._entries.values())

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, name: str) -> S:
        """The spec called ``name``; a `PluginError` if unknown or claimed twice."""
        entry = self._entries.get(name)
        if entry is None:
            close = difflib.get_close_matches(name, self._entries, n=1)
            hint = (
                f"did you mean {close[0]!r}?"
                if close
                else (f"known {self.kind}: {', '.join(sorted(self._entries)) or 'none'}")
            )
            missing = self._not_loaded(self.kind)
            if missing:
                hint += f"; not loaded: {', '.join(missing)}, see `ccsm plugins`"
            raise PluginError(f"unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} {name!r}", hint)
        if entry.conflict_with:
            others = ", ".join([entry.plugin, *entry.conflict_with])
            raise PluginError(
                f"{self.kind[:-1]} {name!r} is registered by more than one plugin: {others}",
                "uninstall or disable one of them (CCSM_DISABLE_PLUGINS=name)",
            )
        return entry

    def create(self, name: str, *args: Any, **kwargs: Any) -> Any:
        """``factory(*args, **kwargs)`` of the spec called ``name``; what the plugin's factory
        raises (a `CcsmError` aside) is a `PluginError` naming the plugin."""
        entry = self.get(name)
        with guarded(entry.plugin, f"the factory of {self.kind[:-1]} {name!r}"):
            return entry.factory(*args, **kwargs)
