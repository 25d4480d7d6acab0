"""Registers the built-in weight formats (loaders import lazily)."""

from __future__ import annotations

from .. import hookimpl


def _safetensors(path, *, validate=True):
    from ..formats.safetensors import load_safetensors

    return load_safetensors(path, validate=validate)


def _gguf(path, *, validate=True):
    from ..formats.gguf_reader import load_gguf

    return load_gguf(path, validate=validate)


@hookimpl
def register_formats(register):
    register("safetensors", _safetensors, suffixes=(".safetensors",),
             sniff=lambda b: len(b) >= 9 and b[8:9] == b"{", summary="safetensors (validated, mmapped)")
    register("gguf", _gguf, suffixes=(".gguf",), sniff=lambda b: b[:4] == b"GGUF",
             summary="GGUF (validated, mmapped)")
