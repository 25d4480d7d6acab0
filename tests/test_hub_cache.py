"""Models given by Hugging Face repo id, from the local cache without network.

Each test lays a model out as huggingface_hub's cache does (``models--org--name/`` with
``refs/main`` naming a revision, ``snapshots/<revision>/`` holding links into ``blobs/``, named by
their content's hash), checks that huggingface_hub itself reads it as a cached repo, and runs
``ccsm`` with ``--model org/name`` under ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1``: a transformers
text model (``generate``, ``convert``), a transformers-layout CSM (``run``), a GGUF-only repo.
The results must be those of the same model given by path.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pytest

from ccsm_core.cli import cli
from ccsm_core.formats.gguf_reader import load_gguf
from ccsm_core.testing.hf_layout import write_hf_folder

FIXTURES = Path(__file__).parent / "fixtures"
REVISION = "0123456789abcdef0123456789abcdef01234567"


def cache_repo(cache: Path, repo: str, source: Path, revision: str = REVISION) -> Path:
    """Put the files of ``source`` (a folder, or one file) into ``cache`` as huggingface_hub lays
    out a downloaded repo; returns the snapshot folder."""
    root = cache / f"models--{repo.replace('/', '--')}"
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / "main").write_text(revision)
    (root / "blobs").mkdir(exist_ok=True)
    snapshot = root / "snapshots" / revision
    files = [source] if source.is_file() else sorted(p for p in source.rglob("*") if p.is_file())
    for f in files:
        data = f.read_bytes()
        blob = root / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / (f.name if source.is_file() else f.relative_to(source))
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    return snapshot


@pytest.fixture
def hub(tmp_path, monkeypatch) -> Path:
    """An empty Hugging Face cache, offline, for this test (huggingface_hub reads its settings
    when imported, so its constants are set too)."""
    import huggingface_hub.constants as constants

    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


def is_cached_by_huggingface_hub(cache: Path, repo: str) -> bool:
    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(cache)
    return any(r.repo_id == repo and any(rev.commit_hash == REVISION for rev in r.revisions) for r in info.repos)


def text_folder(tmp_path: Path) -> Path:
    src = load_gguf(FIXTURES / "text-archs" / "qwen2.gguf")
    md, t = dict(src.metadata), {k: x.numpy() for k, x in src.items()}
    return write_hf_folder(tmp_path / "tiny-qwen2", md, t, shards=2)


def generate(cli_runner, model: str) -> dict:
    res = cli_runner.invoke(cli, ["generate", "abc", "--model", model, "-n", "4", "--temperature", "0", "--json"])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)


def test_text_model_by_repo_id(hub, tmp_path, cli_runner):
    folder = text_folder(tmp_path)
    cache_repo(hub, "org/tiny-qwen2", folder)
    assert is_cached_by_huggingface_hub(hub, "org/tiny-qwen2")
    assert generate(cli_runner, "org/tiny-qwen2") == generate(cli_runner, str(folder))
    out = tmp_path / "converted.gguf"
    res = cli_runner.invoke(cli, ["convert", "org/tiny-qwen2", "-o", str(out), "--type", "f32"])
    assert res.exit_code == 0, res.output
    assert generate(cli_runner, str(out)) == generate(cli_runner, str(folder))


def test_gguf_repo_by_id(hub, tmp_path, cli_runner):
    """A repo of one GGUF file is that file; with two, the error names them."""
    gguf = FIXTURES / "text-archs" / "qwen3.gguf"
    cache_repo(hub, "org/tiny-gguf", gguf)
    assert generate(cli_runner, "org/tiny-gguf") == generate(cli_runner, str(gguf))
    cache_repo(hub, "org/tiny-gguf", FIXTURES / "text-archs" / "qwen2.gguf")
    res = cli_runner.invoke(cli, ["generate", "abc", "--model", "org/tiny-gguf", "-n", "1"])
    assert res.exit_code == 2 and "holds 2 GGUF files" in res.output and "Traceback" not in res.output


def test_csm_by_repo_id(hub, tmp_path, cli_runner):
    import soundfile as sf

    from tests.test_hf_csm import write_hf_csm

    folder = write_hf_csm(tmp_path / "csm-tiny-hf")
    cache_repo(hub, "org/csm-tiny", folder)
    assert is_cached_by_huggingface_hub(hub, "org/csm-tiny")
    outs = []
    for model in ("org/csm-tiny", str(folder)):
        outs.append(tmp_path / f"{len(outs)}.wav")
        res = cli_runner.invoke(cli, ["run", "Hi.", "--model", model, "-o", str(outs[-1]), "--seed", "1"])
        assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(sf.read(outs[0])[0], sf.read(outs[1])[0])


def test_uncached_repo_is_one_clear_error(hub, cli_runner):
    for command in (["generate", "abc"], ["run", "Hi.", "-o", "x.wav"]):
        res = cli_runner.invoke(cli, [*command, "--model", "org/not-there"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output
        assert "org/not-there is not in the Hugging Face cache" in res.output and "ccsm download" in res.output
