"""pytest fixtures for ccsm and its plugins (opt in with ``pytest_plugins``)."""

from __future__ import annotations

import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from ..plugins import PluginManager, reset_plugin_manager


class RegisterProbe:
    """A fake ``register`` that records every call: ``probe.calls == [(name, factory, metadata)]``."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Callable[..., Any], dict[str, Any]]] = []

    def __call__(self, name: str, factory: Callable[..., Any], **metadata: Any) -> None:
        self.calls.append((name, factory, metadata))

    @property
    def names(self) -> list[str]:
        return [c[0] for c in self.calls]


@pytest.fixture
def register_probe() -> RegisterProbe:
    return RegisterProbe()


@pytest.fixture
def plugin_manager(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., PluginManager]]:
    """``plugin_manager(plugins=[module, ...], entrypoints=False)`` -> an isolated manager.

    It also becomes the process-wide manager (``get_plugin_manager()``) for the test."""
    from .. import plugins as plugins_mod

    def make(plugins: list[types.ModuleType] | tuple = (), entrypoints: bool = False) -> PluginManager:
        pm = PluginManager(entrypoints=entrypoints, plugins=tuple(plugins))
        monkeypatch.setattr(plugins_mod, "_manager", pm)
        return pm

    yield make
    reset_plugin_manager()


@pytest.fixture
def cli_runner():
    from click.testing import CliRunner

    return CliRunner()


@pytest.fixture
def reference_backend():
    from ..backends.numpy_backend import NumpyBackend

    return NumpyBackend()


@pytest.fixture
def tiny_csm_dir(tmp_path: Path) -> Path:
    """A random-weight CSM checkpoint folder in the original layout (tiny shapes)."""
    from .models import write_tiny_csm

    return write_tiny_csm(tmp_path / "tiny-csm")


MACHINE_CHECKS = pytest.StashKey[list[str]]()


@pytest.fixture
def report_check(request: pytest.FixtureRequest) -> Callable[[str], None]:
    """``report_check(line)``: name a check whose form depends on this machine (e.g. which
    recording of llama.cpp it compared with); pytest's summary lists every such line."""
    return request.config.stash.setdefault(MACHINE_CHECKS, []).append


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    lines: list[str] = config.stash.get(MACHINE_CHECKS, [])
    for line in dict.fromkeys(lines):
        terminalreporter.write_line(line)
