"""Loading a text model: a GGUF-like weights file (any registered format with GGUF metadata) or
a transformers folder (seen as the GGUF it converts to, `hf_text`), or either by its Hugging Face
repo id in the local cache (`sources.local_model`); the tokenizer from the same
metadata, the architecture from ``general.architecture``. `load_text_tokenizer` builds the same
tokenizer without the weights."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..backends import get_backend
from ..backends.base import Backend
from ..errors import ModelError
from ..models.text import TextConfig, TextLM
from .sources import local_model
from .weights import open_weights

if TYPE_CHECKING:
    from ..tokenizers.gguf_tokenizer import GGUFTokenizer


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


def load_text_tokenizer(path: str | Path) -> GGUFTokenizer:
    """The tokenizer `load_text_model` gives for ``path``, without reading weights where it can:
    a GGUF file's header; the ``config.json`` and tokenizer files of a transformers folder, or
    of the folder beside a format plugin's file (an ONNX export); else the file's metadata."""
    from ..formats.gguf_reader import read_header
    from ..tokenizers.gguf_tokenizer import tokenizer_from_gguf
    from .weights import format_of

    p = local_model(path)
    if p.is_file() and format_of(p).name == "gguf":
        return tokenizer_from_gguf(read_header(p).metadata)
    folder = p if p.is_dir() else p.parent
    if (folder / "config.json").is_file():
        return tokenizer_from_gguf(folder_tokenizer_metadata(folder))
    if p.is_dir():
        raise ModelError(f"{p} has no config.json", "pass a .gguf file or a transformers model folder")
    return tokenizer_from_gguf(open_weights(p).metadata)


def folder_tokenizer_metadata(folder: Path) -> dict[str, Any]:
    """GGUF tokenizer metadata of a transformers folder as `hf_text.open_hf_text` makes it, from
    ``config.json`` (its ``vocab_size`` is the embedding's rows there) and the tokenizer files."""
    from .hf_folder import config_count, read_json
    from .hf_text import find_text_arch, text_config
    from .hf_tokenizer import tokenizer_metadata

    where = str(folder / "config.json")
    cfg = text_config(read_json(folder / "config.json", "config"))
    arch = find_text_arch(cfg, where)
    return tokenizer_metadata(folder, cfg, config_count(cfg, "vocab_size", where), arch.name)
