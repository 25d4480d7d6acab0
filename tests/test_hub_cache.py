"""Models given by Hugging Face repo id, from the local cache without network.

Each test lays a model out as huggingface_hub's cache does (``models--org--name/`` with
``refs/main`` naming a revision, ``snapshots/<revision>/`` holding links into ``blobs/``, named by
their content's hash), checks that huggingface_hub itself reads it as a cached repo, and runs
``ccsm`` with ``--model org/name`` under ``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE=1``: a transformers
text model (``generate``, ``convert``, ``tokenize``), a transformers-layout CSM (``run``), a
GGUF-only repo. The results must be those of the same model given by path.

``ccsm download`` is run against a Hub faked here (no network): the repo's file list, and a
``snapshot_download`` that copies the files its ``allow_patterns`` select into the cache as
huggingface_hub does; the model must then load offline by repo id.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ccsm_core.cli import cli
from ccsm_core.formats.gguf_reader import load_gguf
from ccsm_core.loading.text import load_text_model
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
        link.unlink(missing_ok=True)
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
    config = tmp_path / "config.json"  # some GGUF repos carry the source model's config beside
    config.write_text("{}")
    cache_repo(hub, "org/tiny-gguf", config)
    assert generate(cli_runner, "org/tiny-gguf") == generate(cli_runner, str(gguf))
    cache_repo(hub, "org/tiny-gguf", FIXTURES / "text-archs" / "qwen2.gguf")
    res = cli_runner.invoke(cli, ["generate", "abc", "--model", "org/tiny-gguf", "-n", "1"])
    line = one_line_error(res)
    assert "org/tiny-gguf holds 2 GGUF files (qwen2.gguf, qwen3.gguf)" in line and "--model" in line


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


def one_line_error(res: Any) -> str:
    """The CLI's single error line (exit 2, ``error: ... (hint: ...)``, no traceback)."""
    out = res.output.strip()
    assert res.exit_code == 2 and "Traceback" not in out, out
    lines = [line for line in out.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "(hint: " in lines[0], out
    return lines[0]


TEXTS = ["abcdefg", "nmlkjihgfedcba", "cdabba"]  # the fixtures' vocabulary: a to n, merges ab and cd


def tokenize(cli_runner, model: str, text: str, *extra: str) -> list[int]:
    res = cli_runner.invoke(cli, ["tokenize", text, "--model", model, "--json", *extra])
    assert res.exit_code == 0, res.output
    return json.loads(res.output)["ids"]


def test_tokenize_takes_what_generate_takes(hub, tmp_path, cli_runner):
    """A cached transformers repo, its folder, a cached GGUF repo and its file: the ids of the
    loaded model's tokenizer."""
    folder = text_folder(tmp_path)
    gguf = FIXTURES / "text-archs" / "qwen3.gguf"
    cache_repo(hub, "org/tiny-qwen2", folder)
    cache_repo(hub, "org/tiny-gguf", gguf)
    for repo, path in (("org/tiny-qwen2", folder), ("org/tiny-gguf", gguf)):
        tok = load_text_model(path).tokenizer
        for text in TEXTS:
            want = tok.encode(text, add_special=True)
            assert tokenize(cli_runner, repo, text) == tokenize(cli_runner, str(path), text) == want
            plain = tokenize(cli_runner, repo, text, "--no-special")
            assert plain == tok.encode(text, add_special=False) and len(plain) > 3


def test_tokenize_needs_no_weights(tmp_path, cli_runner):
    """A folder of config and tokenizer files alone, and a format plugin's file beside them (an
    ONNX export, here bytes no ONNX reader accepts: the weights are never opened)."""
    folder = text_folder(tmp_path)
    tokenizer_only = tmp_path / "tokenizer-only"
    tokenizer_only.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(folder / name, tokenizer_only / name)
    models = [str(tokenizer_only)]
    try:
        import ccsm_onnx  # noqa: F401

        (tokenizer_only / "model.onnx").write_bytes(b"not an ONNX graph")
        models.append(str(tokenizer_only / "model.onnx"))
    except ImportError:
        pass
    tok = load_text_model(folder).tokenizer
    for model in models:
        assert tokenize(cli_runner, model, TEXTS[0]) == tok.encode(TEXTS[0], add_special=True)


def test_tokenize_bad_models(hub, tmp_path, cli_runner):
    folder = text_folder(tmp_path)
    (folder / "tokenizer.json").unlink()
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        str(tmp_path / "missing.gguf"): "does not exist",
        str(folder): "has no tokenizer.json or tokenizer.model",
        str(empty): "has no config.json",
        "org/not-there": "org/not-there is not in the Hugging Face cache",
    }
    for model, message in cases.items():
        res = cli_runner.invoke(cli, ["tokenize", "abc", "--model", model])
        assert message in one_line_error(res), res.output


class FakeHub:
    """The Hub for `ccsm download`: ``repos`` maps a repo id to a folder of its files;
    ``snapshot_download`` records each call's ``allow_patterns`` and copies the files they select
    into the cache (cached lookups go to huggingface_hub itself)."""

    def __init__(self, monkeypatch, cache: Path, repos: dict[str, Path]) -> None:
        import huggingface_hub

        self.cache, self.repos, self.calls = cache, repos, []
        self.real = huggingface_hub.snapshot_download
        monkeypatch.setattr(huggingface_hub, "snapshot_download", self.snapshot_download)
        monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", lambda _api, repo, **_: self.files(repo))

    def files(self, repo: str) -> list[str]:
        from huggingface_hub.errors import RepositoryNotFoundError

        if repo not in self.repos:  # made without the HTTP response its constructor wants (versions differ)
            error = RepositoryNotFoundError.__new__(RepositoryNotFoundError)
            Exception.__init__(error, f"404 Client Error. Repository Not Found for url: .../api/models/{repo}")
            raise error
        return sorted(str(p.relative_to(self.repos[repo])) for p in self.repos[repo].rglob("*") if p.is_file())

    def snapshot_download(self, repo: str, *, allow_patterns: list[str], local_files_only: bool = False, **kw):
        from huggingface_hub.utils import filter_repo_objects

        if local_files_only:
            return self.real(repo, allow_patterns=allow_patterns, local_files_only=True, **kw)
        self.calls.append((repo, list(allow_patterns)))
        picked = self.cache.parent / "picked" / repo
        for name in filter_repo_objects(self.files(repo), allow_patterns=allow_patterns):
            (picked / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(self.repos[repo] / name, picked / name)
        picked.mkdir(parents=True, exist_ok=True)
        return str(cache_repo(self.cache, repo, picked))


def download(cli_runner, *args: str) -> Any:
    return cli_runner.invoke(cli, ["download", *args])


def test_download_gguf_repo(hub, tmp_path, cli_runner, monkeypatch):
    """A GGUF repo gets its GGUF file (and no Mimi codec: it is a text model), then loads by id."""
    remote = tmp_path / "remote"
    remote.mkdir()
    shutil.copy(FIXTURES / "text-archs" / "qwen3.gguf", remote / "model-q8_0.gguf")
    (remote / "README.md").write_text("a model card")
    fake = FakeHub(monkeypatch, hub, {"org/tiny-gguf": remote})
    res = download(cli_runner, "org/tiny-gguf")
    assert res.exit_code == 0, res.output
    [(repo, patterns)] = fake.calls
    assert repo == "org/tiny-gguf" and "model-q8_0.gguf" in patterns
    assert not any(p.endswith(".safetensors") for p in patterns) and "README.md" not in patterns
    assert generate(cli_runner, "org/tiny-gguf") == generate(cli_runner, str(FIXTURES / "text-archs" / "qwen3.gguf"))


def test_download_picks_one_gguf_of_many(hub, tmp_path, cli_runner, monkeypatch):
    remote = tmp_path / "remote"
    remote.mkdir()
    for name in ("m-q4_0.gguf", "m-q8_0.gguf", "m-f16.gguf"):
        shutil.copy(FIXTURES / "text-archs" / "qwen2.gguf", remote / name)
    fake = FakeHub(monkeypatch, hub, {"org/many": remote})
    line = one_line_error(download(cli_runner, "org/many"))
    assert "org/many holds 3 GGUF files" in line and "--include m-f16.gguf" in line and not fake.calls
    assert "matches --include" in one_line_error(download(cli_runner, "org/many", "--include", "*q2_k.gguf"))
    res = download(cli_runner, "org/many", "--include", "*q8_0.gguf")
    assert res.exit_code == 0, res.output
    [(_, patterns)] = fake.calls
    assert patterns[0] == "*q8_0.gguf" and not any(p.endswith(".gguf") for p in patterns[1:])
    assert sorted(p.name for p in (hub / "models--org--many" / "snapshots" / REVISION).iterdir()) == ["m-q8_0.gguf"]
    assert tokenize(cli_runner, "org/many", "abc") == tokenize(cli_runner, str(remote / "m-q8_0.gguf"), "abc")


def test_download_transformers_text_repo(hub, tmp_path, cli_runner, monkeypatch):
    """Every file the text loaders read is fetched (shards, index, config, tokenizer files, chat
    template); other weights and files are not; no Mimi codec."""
    remote = text_folder(tmp_path)
    (remote / "generation_config.json").write_text("{}")
    (remote / "chat_template.jinja").write_text("{{ messages }}")
    (remote / "pytorch_model.bin").write_bytes(b"a pickle")
    (remote / "onnx").mkdir()
    (remote / "onnx" / "model.onnx").write_bytes(b"an export")
    fake = FakeHub(monkeypatch, hub, {"org/tiny-qwen2": remote})
    res = download(cli_runner, "org/tiny-qwen2")
    assert res.exit_code == 0, res.output
    assert [repo for repo, _ in fake.calls] == ["org/tiny-qwen2"]
    got = sorted(p.name for p in (hub / "models--org--tiny-qwen2" / "snapshots" / REVISION).iterdir())
    assert got == sorted(p.name for p in remote.iterdir() if p.is_file() and p.suffix != ".bin")
    assert generate(cli_runner, "org/tiny-qwen2") == generate(cli_runner, str(text_folder(tmp_path / "again")))


def test_download_csm_repo_fetches_mimi(hub, tmp_path, cli_runner, monkeypatch):
    from ccsm_core.loading.sources import MIMI_FILE, MIMI_REPO, MODEL_FILES
    from tests.test_hf_csm import write_hf_csm

    mimi = tmp_path / "mimi"
    mimi.mkdir()
    (mimi / MIMI_FILE).write_bytes(b"codec weights")
    fake = FakeHub(monkeypatch, hub, {"org/csm-tiny": write_hf_csm(tmp_path / "csm-tiny-hf"), MIMI_REPO: mimi})
    res = download(cli_runner, "org/csm-tiny")
    assert res.exit_code == 0, res.output
    assert fake.calls == [("org/csm-tiny", MODEL_FILES), (MIMI_REPO, [MIMI_FILE])]
    res = download(cli_runner, "org/csm-tiny", "--no-mimi")
    assert res.exit_code == 0 and len(fake.calls) == 3, res.output


def test_download_errors_are_one_line(hub, tmp_path, cli_runner, monkeypatch):
    import huggingface_hub

    FakeHub(monkeypatch, hub, {})
    assert "Repository Not Found" in one_line_error(download(cli_runner, "org/not-there"))
    remote = tmp_path / "remote"
    remote.mkdir()
    (remote / "ckpt.pt").write_bytes(b"a pickle")
    FakeHub(monkeypatch, hub, {"org/pickles": remote})
    assert "holds no weights ccsm loads" in one_line_error(download(cli_runner, "org/pickles"))

    def unreachable(*_a: Any, **_k: Any) -> list[str]:
        raise type("ConnectError", (Exception,), {})("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub.HfApi, "list_repo_files", unreachable)
    assert "Hub is not reachable" in one_line_error(download(cli_runner, "org/pickles"))
