"""tokenizer.json and SentencePiece tokenizers, and the CSM text template."""

from __future__ import annotations

from pathlib import Path

import pytest

from ccsm_core.errors import FormatError
from ccsm_core.tokenizers import load_tokenizer

FIXTURE = Path(__file__).parent / "fixtures" / "csm-tiny"


def test_fixture_tokenizer_json():
    tok = load_tokenizer(FIXTURE / "tokenizer.json")
    assert (tok.bos_id, tok.eos_id) == (1, 2)
    assert tok.encode("[0]Hi", add_special=False) == [91, 48, 93, 72, 105]
    assert tok.encode("Hi") == [1, 72, 105, 2]
    assert tok.decode([72, 105]) == "Hi"


def test_sentencepiece(tmp_path):
    import sentencepiece as spm

    text = tmp_path / "corpus.txt"
    text.write_text("\n".join(["hello world", "the quick brown fox", "jumps over the lazy dog"] * 50))
    spm.SentencePieceTrainer.train(
        input=str(text),
        model_prefix=str(tmp_path / "m"),
        vocab_size=40,
        model_type="bpe",
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
    )
    tok = load_tokenizer(tmp_path / "m.model")
    ids = tok.encode("hello world")
    assert ids[0] == 1 and ids[-1] == 2
    assert tok.decode(ids[1:-1]) == "hello world"


def test_bad_files(tmp_path):
    with pytest.raises(FormatError, match="does not exist"):
        load_tokenizer(tmp_path / "nope.json")
    (tmp_path / "bad.json").write_text("{]")
    with pytest.raises(FormatError, match="bad.json: not valid JSON"):
        load_tokenizer(tmp_path / "bad.json")
    (tmp_path / "bad.model").write_bytes(b"garbage")
    with pytest.raises(FormatError, match="SentencePiece"):
        load_tokenizer(tmp_path / "bad.model")
    (tmp_path / "x.txt").write_text("")
    with pytest.raises(FormatError, match="no tokenizer understands"):
        load_tokenizer(tmp_path / "x.txt")
