"""``ccsm download``: fetch a model into the Hugging Face cache (where a network exists)."""

from __future__ import annotations

import click


@click.command()
@click.argument("repo", default="sesame/csm-1b")
@click.option("--mimi/--no-mimi", default=True, show_default=True, help="Also fetch the Mimi codec (kyutai/moshiko-pytorch-bf16).")
def download(repo: str, mimi: bool) -> None:
    """Download REPO (default sesame/csm-1b) and the Mimi codec into the Hugging Face cache.

    Afterwards `--model REPO` works offline. Gated repos need `huggingface-cli login` first.
    """
    from ..sources import CSM_FILES, MIMI_FILE, MIMI_REPO, hf_snapshot

    path = hf_snapshot(repo, CSM_FILES, download=True)
    click.echo(f"{repo} -> {path}", err=True)
    if mimi:
        mpath = hf_snapshot(MIMI_REPO, [MIMI_FILE], download=True)
        click.echo(f"{MIMI_REPO} -> {mpath}", err=True)
