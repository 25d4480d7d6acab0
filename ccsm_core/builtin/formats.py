"""Registers the built-in weight formats: each format module's own ``sniff`` and loader."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ..hookspecs import hookimpl

if TYPE_CHECKING:  # importing NumPy here would slow `ccsm --help`
    from ..tensors import WeightSource


def _safetensors(path: Path, *, validate: bool = True) -> WeightSource:
    from ..formats.safetensors import load_safetensors

    return load_safetensors(path, validate=validate)


def _gguf(path: Path, *, validate: bool = True) -> WeightSource:
    from ..formats.gguf_reader import load_gguf

    return load_gguf(path, validate=validate)


@hookimpl
def register_formats(register):
    from ..formats import gguf_reader, safetensors  # light: their readers import gguf lazily

    register(
        "safetensors",
        _safetensors,
        suffixes=(".safetensors",),
        sniff=safetensors.sniff,
        summary="safetensors (validated, mmapped)",
    )
    register("gguf", _gguf, suffixes=(".gguf",), sniff=gguf_reader.sniff, summary="GGUF (validated, mmapped)")
