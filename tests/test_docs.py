"""docs/plugins.md documents every hook with its exact signature."""

from __future__ import annotations

import inspect
from pathlib import Path

from ccsm_core import hookspecs

DOC = (Path(__file__).parents[1] / "docs" / "plugins.md").read_text()


def test_every_hook_documented():
    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("register_") and callable(f)]
    assert len(hooks) == 6
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({params})`" in DOC, name
        assert getattr(hookspecs, name).__doc__.strip()
