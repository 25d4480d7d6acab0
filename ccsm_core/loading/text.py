"""Loading a text model: a GGUF-like weights file (any registered format with GGUF metadata) or
a transformers folder (seen as the GGUF it converts to, `hf_text`), or either by its Hugging Face
repo id in the local cache (`sources.local_model`); the tokenizer from the same
metadata, the architecture from ``general.architecture``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import get_backend
from ..backends.base import Backend
from ..models.text import TextConfig, TextLM
from .sources import local_model
from .weights import open_weights


@dataclass
class LoadedText:
    """A built text model with its tokenizer, the file's metadata and where it came from."""

    model: TextLM
    tokenizer: Any
    metadata: dict[str, Any]
    path: Path


def text_source(path: str | Path) -> tuple[dict[str, Any], Mapping[str, Any]]:
    """(GGUF metadata, GGUF-named tensors) of a text model file or transformers folder."""
    p = local_model(path)
    if p.is_dir():
        from .hf_text import open_hf_text

        hf = open_hf_text(p)
        return hf.metadata, hf.tensors
    source = open_weights(p)
    return dict(source.metadata), source.tensors


def load_text_model(path: str | Path, backend: Backend | str | None = None, *, kv_dtype: str = "float16") -> LoadedText:
    """A text model with its tokenizer: a GGUF file, or a transformers folder (``config.json``,
    safetensors, tokenizer files). ``kv_dtype``: the KV cache's storage, ``float16`` (llama.cpp's
    default, and what its logits are recorded with) or ``float32``."""
    from ..tokenizers.gguf_tokenizer import tokenizer_from_gguf

    p = local_model(path)
    metadata, tensors = text_source(p)
    tok = tokenizer_from_gguf(metadata)
    cfg = TextConfig.from_metadata(metadata, tok.vocab_size, str(p))
    be = get_backend(backend) if backend is None or isinstance(backend, str) else backend
    return LoadedText(TextLM(be, cfg, tensors, kv_dtype), tok, metadata, p)
