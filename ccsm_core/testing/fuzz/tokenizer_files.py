"""Tokenizer files: ``tokenizer.json`` (in a transformers text folder, and alone as a CSM
tokenizer), ``tokenizer_config.json`` (specials, chat template) and SentencePiece ``.model``."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import strategies as st

from .case import Case
from .configs import folder_cases
from .gguf import TEMPLATES, run_text_model
from .mutate import mutated_bytes
from .target import Target, all_of


def _run_tokenizer_json(folder: Path) -> None:
    from ...tokenizers import load_tokenizer

    all_of(
        lambda: run_text_model(folder),
        lambda: load_tokenizer(folder / "tokenizer.json").encode("Hello there."),  # as a CSM tokenizer
    )


def _tokenizer_config_cases(folder: Path) -> st.SearchStrategy[Case]:
    links = {p.name: p for p in folder.iterdir() if p.name != "tokenizer_config.json"}
    templates = st.sampled_from(TEMPLATES).map(
        lambda t: Case({"tokenizer_config.json": json.dumps({"chat_template": t}).encode()}, links)
    )
    return st.one_of(folder_cases(folder, "tokenizer_config.json"), templates)


def _spm_cases(path: Path) -> st.SearchStrategy[Case]:
    return mutated_bytes(path.read_bytes(), hot=512, max_edits=3).map(lambda b: Case({"tokenizer.model": b}))


def _run_spm(folder: Path) -> None:
    from ...loading.hf_tokenizer import read_sentencepiece
    from ...tokenizers import load_tokenizer

    all_of(
        lambda: read_sentencepiece(folder / "tokenizer.model"),
        lambda: load_tokenizer(folder / "tokenizer.model").encode("hello world"),
    )


TARGETS = [
    Target(
        "tokenizer-json",
        "text",
        "tokenizer.json: a transformers text folder (load, 2 tokens, template) and load_tokenizer alone",
        lambda s: folder_cases(s.hf_text, "tokenizer.json"),
        _run_tokenizer_json,
    ),
    Target(
        "tokenizer-config",
        "text",
        "tokenizer_config.json: a transformers text folder (load, 2 tokens, chat template)",
        lambda s: _tokenizer_config_cases(s.hf_text),
        run_text_model,
    ),
    Target(
        "sentencepiece",
        "text",
        "SentencePiece tokenizer.model: read_sentencepiece and load_tokenizer",
        lambda s: _spm_cases(s.spm_model),
        _run_spm,
    ),
]
