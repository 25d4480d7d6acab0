"""Write the ``register(...)`` keyword lists of docs/plugins.md from ``ccsm_core/specs.py``.

Each ``### `register_<kind>(register)` `` section of docs/plugins.md holds a block between
``<!-- specs:<kind>:start -->`` and ``<!-- specs:<kind>:end -->``: the keywords of the kind's
spec with their types, defaults and meaning (each field's ``metadata["doc"]``). This script
rewrites those blocks and leaves the rest of the file alone.

    python scripts/gen_plugin_docs.py          # rewrite docs/plugins.md
    python scripts/gen_plugin_docs.py --check  # exit 1 if it is out of date
"""

from __future__ import annotations

import argparse
import re
import sys
import textwrap
from dataclasses import MISSING, Field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "plugins.md"
sys.path.insert(0, str(ROOT))

from ccsm_core.specs import KINDS, keywords  # noqa: E402


def _literal(value: Any) -> str:
    """``value`` as Python source, strings in double quotes."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, tuple):
        inner = ", ".join(_literal(v) for v in value)
        return f"({inner},)" if len(value) == 1 else f"({inner})"
    return repr(value)


def _keyword(f: Field[Any]) -> str:
    """One list item: ``name: type = default`` and what the keyword means."""
    annotation = str(f.type).replace("'", '"')  # the compiler writes string annotations with '
    if f.default is MISSING and f.default_factory is MISSING:
        head = f"`{f.name}: {annotation}` (required)"
    else:
        head = f"`{f.name}: {annotation} = {_literal(f.default)}`"
    doc = f.metadata.get("doc", "")
    item = f"- {head}: {doc}." if doc else f"- {head}."
    return textwrap.fill(item, width=100, subsequent_indent="  ", break_long_words=False, break_on_hyphens=False)


def block(kind: str) -> str:
    """The generated text of ``kind``'s block, markers included."""
    spec = KINDS[kind].spec
    lines = [
        f"<!-- specs:{kind}:start -->",
        f"`register(name, factory, **keywords)` builds a `ccsm_core.specs.{spec.__name__}`; its keywords:",
        "",
        *(_keyword(f) for f in keywords(spec)),
        f"<!-- specs:{kind}:end -->",
    ]
    return "\n".join(lines)


def render(text: str) -> str:
    """``text`` (docs/plugins.md) with every kind's block regenerated."""
    for kind in KINDS:
        pattern = re.compile(rf"<!-- specs:{kind}:start -->.*?<!-- specs:{kind}:end -->", re.S)
        if not pattern.search(text):
            raise SystemExit(
                f"docs/plugins.md has no <!-- specs:{kind}:start --> ... <!-- specs:{kind}:end --> "
                f"block; add one to the `{KINDS[kind].hook}(register)` section"
            )
        text = pattern.sub(lambda _m, kind=kind: block(kind), text, count=1)
    return text


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if docs/plugins.md is out of date")
    args = parser.parse_args(argv)
    old = DOC.read_text()
    new = render(old)
    if args.check:
        if new != old:
            print("docs/plugins.md is out of date: run scripts/gen_plugin_docs.py", file=sys.stderr)
            return 1
        return 0
    if new != old:
        DOC.write_text(new)
        print(f"rewrote {DOC.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
