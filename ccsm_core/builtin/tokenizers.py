"""Registers the built-in text tokenizers."""

from __future__ import annotations

from pathlib import PurePath

from ..hookspecs import hookimpl


def _hf_json(source):
    from ..tokenizers.hf_json import HFJsonTokenizer

    return HFJsonTokenizer(source)


def _sentencepiece(source):
    from ..tokenizers.sentencepiece_model import SentencePieceTokenizer

    return SentencePieceTokenizer(source)


def _gguf(source):
    from ..tokenizers.gguf_tokenizer import tokenizer_from_gguf

    return tokenizer_from_gguf(source)


def _gguf_sniff(source) -> bool:
    from ..tokenizers.gguf_tokenizer import sniff

    return sniff(source)


def _is(suffix: str):
    """Sniff a file path by its suffix (GGUF metadata mappings are never files)."""
    return lambda source: isinstance(source, (str, PurePath)) and str(source).endswith(suffix)


@hookimpl
def register_tokenizers(register):
    register("hf-json", _hf_json, sniff=_is(".json"), summary="tokenizer.json via the tokenizers library")
    register("sentencepiece", _sentencepiece, sniff=_is(".model"), summary="SentencePiece .model files")
    register("gguf", _gguf, sniff=_gguf_sniff, summary="GGUF metadata vocabularies (llama.cpp-exact)")
