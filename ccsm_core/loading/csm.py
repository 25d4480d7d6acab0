"""Finding and loading CSM checkpoints: a folder in the original layout (weights in any registered
format), its weights file, or a CSM GGUF."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..backends import get_backend
from ..backends.base import Backend
from ..errors import FormatError, ModelError
from ..models.config import CsmConfig
from ..models.csm import CSM
from .weights import PICKLE_HINT, PICKLE_SUFFIXES, is_format, open_weights, weight_suffixes

WEIGHTS_STEM = "model"  # a checkpoint folder holds model.<suffix of a registered format>
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer.model")


@dataclass
class ModelFiles:
    """Where the pieces of one CSM checkpoint are."""

    config: Path
    weights: Path
    tokenizer: Path | None


def find_model_files(path: str | Path) -> ModelFiles:
    """Resolve a folder (``config.json`` + ``model.safetensors``, or ``model.<suffix>`` of another
    registered format) or a weights file beside its ``config.json``."""
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise FormatError(f"{p} is a pickled PyTorch checkpoint", PICKLE_HINT)
    if not p.exists():
        raise ModelError(f"model {p} does not exist", "pass a folder with config.json and model.safetensors")
    folder = p if p.is_dir() else p.parent
    if p.is_file():
        weights = p
    else:
        found = [folder / (WEIGHTS_STEM + s) for s in weight_suffixes() if (folder / (WEIGHTS_STEM + s)).is_file()]
        if not found:
            pickles = sorted(x.name for x in folder.iterdir() if x.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                raise FormatError(f"{folder} holds only pickled weights ({', '.join(pickles)})", PICKLE_HINT)
            raise ModelError(f"{folder} has no model.safetensors", "pass a CSM checkpoint folder")
        weights = found[0]
    config = folder / "config.json"
    if not config.exists():
        raise ModelError(f"{folder} has no config.json", "the original checkpoint folder has one; copy it beside the weights")
    tokenizer = next((folder / n for n in TOKENIZER_NAMES if (folder / n).exists()), None)
    return ModelFiles(config, weights, tokenizer)


def read_config(path: Path) -> CsmConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not readable JSON ({e})", "restore the model's config.json") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return CsmConfig.from_dict(data, str(path))


@dataclass
class LoadedCsm:
    """A built model with its tokenizer, where it came from, and Mimi if the file holds one."""

    model: CSM
    tokenizer: Any
    config: CsmConfig
    files: ModelFiles | None
    mimi_tensors: Mapping[str, Any] | None = None
    mimi_config: dict | None = None


def is_gguf(path: Path) -> bool:
    """Whether ``path`` is a GGUF file (as the formats registry recognises it)."""
    return is_format(path, "gguf")


def _load_gguf(path: Path, be: Backend, tokenizer: str | Path | None) -> LoadedCsm:
    from ..tokenizers import load_tokenizer
    from ..tokenizers.hf_json import HFJsonTokenizer
    from .csm_gguf import GGUFCsm

    g = GGUFCsm(path)
    model = CSM(be, g.config, g.csm_tensors)
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer)
    elif g.tokenizer_json is not None:
        tok = HFJsonTokenizer(path, text=g.tokenizer_json)
    else:
        raise ModelError(f"{path} holds no tokenizer", "pass --tokenizer PATH (the Llama-3.2-1B tokenizer.json)")
    return LoadedCsm(model, tok, g.config, None, g.mimi_tensors or None, g.mimi_config)


def load_csm(path: str | Path, backend: Backend | str | None = None, *,
             tokenizer: str | Path | None = None) -> LoadedCsm:
    """Load a CSM checkpoint (folder, weights file or our ``.gguf``) onto ``backend``."""
    from ..tokenizers import load_tokenizer

    be = get_backend(backend) if backend is None or isinstance(backend, str) else backend
    if is_gguf(Path(path).expanduser()):
        return _load_gguf(Path(path).expanduser(), be, tokenizer)
    files = find_model_files(path)
    cfg = read_config(files.config)
    weights = open_weights(files.weights)
    model = CSM(be, cfg, weights)
    tok_path = tokenizer or files.tokenizer
    if tok_path is None:
        raise ModelError(f"{files.config.parent} has no tokenizer.json or tokenizer.model",
                         "pass --tokenizer PATH (the Llama-3.2-1B tokenizer.json)")
    tok = load_tokenizer(tok_path)
    if tok.bos_id is None or tok.eos_id is None:
        raise ModelError(f"tokenizer {tok_path} has no begin/end-of-text tokens",
                         "use the Llama-3 tokenizer CSM was trained with")
    return LoadedCsm(model, tok, cfg, files)
