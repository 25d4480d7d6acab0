"""Loading a text model: a GGUF-like weights file (any registered format with GGUF metadata),
its tokenizer from the same metadata, the architecture from ``general.architecture``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..backends import get_backend
from ..backends.base import Backend
from ..errors import ModelError
from ..models.text import TextConfig, TextLM
from .weights import open_weights


@dataclass
class LoadedText:
    """A built text model with its tokenizer, the file's metadata and where it came from."""

    model: TextLM
    tokenizer: Any
    metadata: dict[str, Any]
    path: Path


def load_text_model(path: str | Path, backend: Backend | str | None = None, *, kv_dtype: str = "float16") -> LoadedText:
    """A GGUF text model with its tokenizer (from the file's metadata). ``kv_dtype``: the KV
    cache's storage, ``float16`` (llama.cpp's default, and what its logits are recorded with) or
    ``float32``."""
    from ..tokenizers.gguf_tokenizer import tokenizer_from_gguf

    p = Path(path).expanduser()
    if not p.exists():
        raise ModelError(f"model {p} does not exist", "pass a .gguf file")
    source = open_weights(p)
    tok = tokenizer_from_gguf(source.metadata)
    cfg = TextConfig.from_metadata(source.metadata, tok.vocab_size, str(p))
    be = get_backend(backend) if backend is None or isinstance(backend, str) else backend
    return LoadedText(TextLM(be, cfg, source.tensors, kv_dtype), tok, dict(source.metadata), p)
