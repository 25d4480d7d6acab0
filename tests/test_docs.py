"""docs/plugins.md documents every hook with its exact signature, and its keyword lists are
generated from ``ccsm_core.specs`` (``scripts/gen_plugin_docs.py``)."""

from __future__ import annotations

import importlib.util
import inspect
from pathlib import Path

from ccsm_core import hookspecs
from ccsm_core.specs import KINDS, keywords

ROOT = Path(__file__).parents[1]
DOC = (ROOT / "docs" / "plugins.md").read_text()


def _gen():
    spec = importlib.util.spec_from_file_location("gen_plugin_docs", ROOT / "scripts" / "gen_plugin_docs.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_every_hook_documented():
    hooks = [n for n, f in vars(hookspecs).items() if n.startswith("register_") and callable(f)]
    assert len(hooks) == 6
    for name in hooks:
        params = ", ".join(inspect.signature(getattr(hookspecs, name)).parameters)
        assert f"### `{name}({params})`" in DOC, name
        assert getattr(hookspecs, name).__doc__.strip()


def test_keyword_lists_are_generated_from_the_specs():
    fresh = _gen().render(DOC)
    assert fresh == DOC, "docs/plugins.md is out of date with ccsm_core/specs.py: run scripts/gen_plugin_docs.py"


def test_each_kind_block_sits_in_its_hook_section_and_lists_every_keyword():
    for kind, (hook, spec) in KINDS.items():
        section = DOC.split(f"### `{hook}(register)`", 1)[1].split("\n### ", 1)[0]
        block = section.split(f"<!-- specs:{kind}:start -->", 1)[1].split(f"<!-- specs:{kind}:end -->", 1)[0]
        for f in keywords(spec):
            assert f"- `{f.name}: " in block, (kind, f.name)
            assert f.metadata.get("doc"), f"{spec.__name__}.{f.name} has no doc"


def test_hookspec_docstrings_point_to_the_spec_classes():
    for hook, spec in KINDS.values():
        assert f"ccsm_core.specs.{spec.__name__}" in getattr(hookspecs, hook).__doc__, hook
