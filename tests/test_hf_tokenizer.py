"""A transformers tokenizer as GGUF metadata gives tokenizer.json's ids on hard strings.

For each pre-tokenizer family a byte-level BPE is trained here with the ``tokenizers`` library
(the pre-tokenizer exactly as the real models' tokenizer.json has it), converted to GGUF
metadata, and ccsm's GGUF tokenizer (and llama.cpp's, where llama-cpp-python is installed) must
give the ids the ``tokenizers`` library gives. SentencePiece: pieces, scores and types read from
a trained ``tokenizer.model`` equal what ``sentencepiece`` reports.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from ccsm_core.errors import FormatError
from ccsm_core.loading.hf_tokenizer import SPLIT_PRE, read_sentencepiece, tokenizer_metadata
from ccsm_core.tokenizers.gguf_tokenizer import GGUFTokenizer

HARD = [
    "Hello world",
    "  two  spaces and a trailing one ",
    "tabs\tand\nnewlines\n\n\nend",
    "a\r\nb\r\n",
    "numbers 1234567 and 3.14159, 2024-06-01",
    "café naïve résumé ÅÄÖ åäö",
    "日本語のテキストと中文",
    "emoji 🦙🚀 ok 👍🏽",
    "def f(x):\n    return x**2  # code {}[]",
    "I'm you're it's WE'LL they'd",
    "<|im_start|>user\nhi there<|im_end|>\n",
    "   ",
    "x" * 40,
    "don't   stop",
]
SPECIALS = ["<|begin_of_text|>", "<|im_start|>", "<|im_end|>"]
CORPUS = [s for s in HARD if "<|" not in s] * 3 + ["the quick brown fox jumps over the lazy dog " * 4]
LLAMA3_RE, QWEN2_RE = list(SPLIT_PRE)


def trained(family: str):
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    if family in ("llama-bpe", "qwen2"):
        regex = LLAMA3_RE if family == "llama-bpe" else QWEN2_RE
        tok.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.Split(Regex(regex), "isolated"), byte_level])
    elif family == "smollm":
        tok.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Digits(individual_digits=True), pre_tokenizers.ByteLevel(add_prefix_space=False)]
        )
    else:
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=420, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=SPECIALS
    )
    tok.train_from_iterator(CORPUS, trainer)
    return tok


def folder_for(tmp_path: Path, tok, family: str) -> Path:
    folder = tmp_path / family
    folder.mkdir()
    tok.save(str(folder / "tokenizer.json"))
    cfg = {"bos_token": "<|begin_of_text|>", "eos_token": "<|im_end|>", "add_bos_token": False}
    cfg["clean_up_tokenization_spaces"] = family != "smollm"
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("family", ["llama-bpe", "qwen2", "gpt-2", "smollm"])
def test_ids_equal_tokenizer_json(family, tmp_path):
    tok = trained(family)
    folder = folder_for(tmp_path, tok, family)
    md = tokenizer_metadata(folder, {}, tok.get_vocab_size() + 5, "llama")  # padded like a real embedding
    assert md["tokenizer.ggml.pre"] == family
    assert md["tokenizer.ggml.tokens"][-1] == f"[PAD{tok.get_vocab_size() + 4}]"
    assert md["tokenizer.ggml.bos_token_id"] == tok.token_to_id("<|begin_of_text|>")
    ours = GGUFTokenizer(md)
    for text in HARD:
        want = tok.encode(text, add_special_tokens=False).ids
        assert ours.encode(text, add_special=False) == want, text
        assert ours.decode(want, skip_special=False) == tok.decode(want, skip_special_tokens=False), text
    try:
        import llama_cpp
    except ImportError:  # pragma: no cover - llama-cpp-python is optional
        return
    from ccsm_core.formats.gguf_writer import write_gguf

    md |= {"llama.block_count": 1, "llama.embedding_length": 8, "llama.feed_forward_length": 8}
    md |= {"llama.attention.head_count": 1, "llama.context_length": 8}
    path = write_gguf(tmp_path / "vocab.gguf", md, {}, "llama")
    llm = llama_cpp.Llama(model_path=str(path), vocab_only=True, verbose=False)
    for text in HARD:
        assert llm.tokenize(text.encode(), add_bos=False, special=True) == ours.encode(text, add_special=False), text


def test_unknown_pre_tokenizer_is_refused(tmp_path):
    tok = trained("llama-bpe")
    folder = folder_for(tmp_path, tok, "x")
    data = json.loads((folder / "tokenizer.json").read_text())
    data["pre_tokenizer"]["pretokenizers"][0]["pattern"]["Regex"] = r"\w+"
    (folder / "tokenizer.json").write_text(json.dumps(data))
    with pytest.raises(FormatError, match="not recognised"):
        tokenizer_metadata(folder, {}, 500, "llama")


def test_sentencepiece_pieces(tmp_path):
    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(CORPUS * 5),
        model_writer=model,
        model_type="bpe",
        vocab_size=380,
        hard_vocab_limit=False,
        minloglevel=2,
        byte_fallback=True,
        user_defined_symbols=["<start_of_turn>"],
        character_coverage=1.0,
    )
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue())
    sp = spm.SentencePieceProcessor(model_proto=model.getvalue())
    pieces, add_prefix = read_sentencepiece(tmp_path / "tokenizer.model")
    assert add_prefix and len(pieces) == sp.get_piece_size()
    for i, (text, score, kind) in enumerate(pieces):
        assert text == sp.id_to_piece(i) and score == pytest.approx(sp.get_score(i))
        want = 2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else None
        if want is not None:
            assert kind == want, (i, text)
    assert pieces[sp.piece_to_id("<start_of_turn>")][2] == 4
    md = tokenizer_metadata(tmp_path, {"bos_token_id": 1, "eos_token_id": 2}, 400, "llama")
    assert md["tokenizer.ggml.model"] == "llama" and len(md["tokenizer.ggml.tokens"]) == 400
    ours = GGUFTokenizer(md)
    for text in ("Hello world", "the quick brown fox", "numbers 1234567"):
        assert ours.encode(text, add_special=False) == sp.encode(text), text
    (tmp_path / "tokenizer.model").write_bytes(model.getvalue()[:-7])
    with pytest.raises(FormatError, match="SentencePiece"):
        read_sentencepiece(tmp_path / "tokenizer.model")
