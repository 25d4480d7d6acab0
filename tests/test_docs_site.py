"""The documentation site builds with `mkdocs build --strict`, documents every command and lists
every page in its nav; the performance page's measured figures are the README's."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocs_click")
pytest.importorskip("mkdocstrings")

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

# Every command path of the CLI, plugin commands included (in a child process: listing the
# commands adds the plugins' commands to the shared click group).
_WALK = """
import json, click
from ccsm_core.cli import cli
paths = []
def walk(cmd, ctx, path):
    paths.append(path)
    if isinstance(cmd, click.Group):
        for name in cmd.list_commands(ctx):
            sub = cmd.get_command(ctx, name)
            walk(sub, click.Context(sub, parent=ctx, info_name=name), path + " " + name)
walk(cli, click.Context(cli, info_name="ccsm"), "ccsm")
print(json.dumps(paths))
"""


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    log = proc.stdout + proc.stderr
    assert proc.returncode == 0, log
    assert "WARNING" not in log, log
    return out


def test_cli_reference_documents_every_command(site: Path) -> None:
    proc = subprocess.run([sys.executable, "-c", _WALK], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    paths = json.loads(proc.stdout)
    assert {"ccsm", "ccsm run", "ccsm generate"} <= set(paths)
    html = (site / "cli" / "index.html").read_text()
    for path in paths:
        anchor = re.sub(r"[^a-z0-9]+", "-", path.lower())
        assert f'id="{anchor}"' in html, f"`{path}` has no section in the CLI reference"
        assert f"{path} [OPTIONS]" in html, f"`{path}` has no usage line in the CLI reference"


def test_every_page_is_in_the_nav() -> None:
    from mkdocs.config import load_config

    cfg = load_config(str(ROOT / "mkdocs.yml"))

    def pages(items: object) -> list[str]:
        if isinstance(items, str):
            return [items]
        if isinstance(items, dict):
            return [p for v in items.values() for p in pages(v)]
        if isinstance(items, list):
            return [p for v in items for p in pages(v)]
        return []

    in_nav = set(pages(cfg["nav"]))
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert on_disk - in_nav == set(), "pages missing from the nav in mkdocs.yml"
    assert in_nav - on_disk == set(), "nav entries without a page"


def test_api_and_architecture_pages_render(site: Path) -> None:
    api = (site / "api" / "backends" / "index.html").read_text()
    assert 'id="ccsm_core.backends.base.Backend"' in api
    arch = (site / "architecture" / "index.html").read_text()
    assert '<div class="mermaid">' in arch and "tests/test_imports.py" in arch


def test_performance_page_shows_the_readmes_figures(site: Path) -> None:
    """The performance page includes the README's Speed section (one source for the figures):
    every measured row of it is on the built page."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("[start:speed]") : readme.index("[end:speed]")]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in section.splitlines() if line.startswith("|")]
    figures = [cells for cells in rows if re.match(r"\d", cells[1])]
    assert len(figures) >= 8
    html = (site / "performance" / "index.html").read_text()
    for cells in figures:
        assert f"<td>{cells[1]}</td>" in html, f"README figure row missing from the performance page: {cells}"
    assert '--8<-- "README.md:speed"' in (DOCS / "performance.md").read_text()
