"""Finding and loading CSM checkpoints: a folder in the original layout (weights in any registered
format), its weights file, a transformers ``CsmForConditionalGeneration`` folder, or a CSM GGUF."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import get_backend
from ..backends.base import Backend
from ..errors import ModelError
from ..models.config import CsmConfig
from ..models.csm import CSM
from .checkpoint import ModelFiles, find_model_files, read_config
from .weights import is_format, open_weights


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


def load_csm(
    path: str | Path, backend: Backend | str | None = None, *, tokenizer: str | Path | None = None
) -> LoadedCsm:
    """Load a CSM checkpoint (folder, weights file or our ``.gguf``) onto ``backend``."""
    from ..tokenizers import load_tokenizer

    be = get_backend(backend) if backend is None or isinstance(backend, str) else backend
    if is_gguf(Path(path).expanduser()):
        return _load_gguf(Path(path).expanduser(), be, tokenizer)
    from .hf_csm import is_hf_csm, open_hf_csm

    if is_hf_csm(path):
        hf = open_hf_csm(path)
        tok_path = tokenizer or hf.tokenizer
        if tok_path is None:
            raise ModelError(f"{path} has no tokenizer.json", "pass --tokenizer PATH (the Llama-3.2-1B tokenizer.json)")
        model = CSM(be, hf.config, hf.tensors)
        return LoadedCsm(model, load_tokenizer(tok_path), hf.config, None, hf.mimi_tensors, hf.mimi_config)
    files = find_model_files(path)
    cfg = read_config(files.config)
    weights = open_weights(files.weights)
    model = CSM(be, cfg, weights)
    tok_path = tokenizer or files.tokenizer
    if tok_path is None:
        raise ModelError(
            f"{files.config.parent} has no tokenizer.json or tokenizer.model",
            "pass --tokenizer PATH (the Llama-3.2-1B tokenizer.json)",
        )
    tok = load_tokenizer(tok_path)
    if tok.bos_id is None or tok.eos_id is None:
        raise ModelError(
            f"tokenizer {tok_path} has no begin/end-of-text tokens", "use the Llama-3 tokenizer CSM was trained with"
        )
    return LoadedCsm(model, tok, cfg, files)
