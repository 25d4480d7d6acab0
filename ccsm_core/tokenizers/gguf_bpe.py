"""GPT-2-style byte-level BPE as llama.cpp runs it (``tokenizer.ggml.model == "gpt2"``).

The pre-tokenizer regexes and flags follow llama.cpp's ``llama-vocab.cpp`` per
``tokenizer.ggml.pre``; several regexes apply in sequence, each splitting every piece into its
matches and the text between them ("isolated"). The merges run in the ``tokenizers`` library.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from ..errors import FormatError

_CONTRACTIONS = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])"
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
_LLAMA3 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN2 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
_QWEN35 = (
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

REGEXES: dict[str, tuple[str, ...]] = {
    "default": (r"[\p{P}\$\+<=>\^~\|]+", _GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"),
    "llama3": (_LLAMA3,),
    "gpt2": (_GPT2,),
    "starcoder": (r"\p{N}", _GPT2),
    "qwen2": (_QWEN2,),
    "qwen35": (_QWEN35,),
    "falcon": (r"[\p{P}\$\+<=>\^~\|`]+", _GPT2, r"[0-9][0-9][0-9]"),
    "poro": (r" ?[^(\s|.,!?…。，、।۔،)]+",),
    "deepseek-coder": (r"[\r\n]", r"\s?\p{L}+", r"\s?\p{P}+", r"[一-龥ࠀ-一가-퟿]+", r"\p{N}"),
}


@dataclass(frozen=True)
class PreTokenizer:
    """How llama.cpp pre-tokenizes one ``tokenizer.ggml.pre`` family."""

    regexes: tuple[str, ...]
    ignore_merges: bool = False  # a whole pre-token found in the vocab is used as is
    add_bos: bool = False  # default when tokenizer.ggml.add_bos_token is absent
    clean_spaces: bool = True  # llama.cpp's clean-up of " ," " ." " 's" ... when decoding
    bos_null: bool = False  # the family has no BOS token


def _family(regex: str, names: str, **flags: bool) -> dict[str, PreTokenizer]:
    pre = PreTokenizer(REGEXES[regex], **flags)
    return {n: pre for n in names.split()}


PRE_TOKENIZERS: dict[str, PreTokenizer] = {
    **_family("default", "default"),
    **_family(
        "llama3",
        "llama3 llama-v3 llama-bpe falcon3 falcon-h1 pixtral midm-2.0 lfm2 jina-v5-nano",
        ignore_merges=True,
        add_bos=True,
    ),
    **_family("llama3", "dbrx smaug-bpe"),
    **_family("llama3", "glm4 chatglm-bpe", bos_null=True),
    **_family(
        "gpt2",
        "gpt-2 phi-2 jina-es jina-de gigachat jina-v2-es jina-v2-de a.x-4.0 mellum modern-bert mpt olmo jais exaone4",
    ),
    **_family("gpt2", "trillion granite-docling", clean_spaces=False),
    **_family("starcoder", "starcoder refact codeshell exaone minerva-7b mellum2"),
    **_family("starcoder", "smollm command-r", clean_spaces=False),
    **_family("qwen2", "stablelm2 megrez"),
    **_family("qwen2", "qwen2 deepseek-r1-qwen kormo f2llmv2 hunyuan solar-open", clean_spaces=False),
    **_family("qwen35", "qwen35", clean_spaces=False),
    **_family("falcon", "falcon"),
    **_family("poro", "bloom gpt3-finnish"),
    **_family("poro", "poro-chat", clean_spaces=False),
    **_family("deepseek-coder", "deepseek-coder", clean_spaces=False),
}


def pre_tokenizer(name: str | None) -> PreTokenizer:
    """The pre-tokenizer for a ``tokenizer.ggml.pre`` value (missing -> llama.cpp's default)."""
    key = name or "default"
    if not isinstance(key, str) or key not in PRE_TOKENIZERS:
        raise FormatError(
            f"unsupported GGUF pre-tokenizer {key!r} (tokenizer.ggml.pre)",
            "supported: " + ", ".join(sorted(PRE_TOKENIZERS)),
        )
    return PRE_TOKENIZERS[key]


@lru_cache(maxsize=1)
def byte_decoder() -> dict[str, int]:
    """GPT-2's printable stand-in character -> byte value (inverse of ``bytes_to_unicode``)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = list(bs)
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def decode_byte_level(text: str) -> bytes:
    """A byte-level token's text -> its bytes (characters outside the table pass as UTF-8)."""
    table = byte_decoder()
    out = bytearray()
    for ch in text:
        b = table.get(ch)
        if b is None:
            out += ch.encode("utf-8", "surrogateescape")
        else:
            out.append(b)
    return bytes(out)


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


class BPEModel:
    """Byte-level BPE over raw text fragments (no special-token handling here)."""

    def __init__(self, tokens: Sequence[str], merges: Sequence[str], pre: PreTokenizer) -> None:
        from tokenizers import Regex, Tokenizer, models, pre_tokenizers

        vocab = {t: i for i, t in enumerate(tokens) if _utf8_ok(t)}
        pairs: list[tuple[str, str]] = []
        seen: set[tuple[str, str]] = set()
        for m in merges:
            pos = m.find(" ", 1)  # llama.cpp splits at the first space after position 0
            if pos < 0:
                continue
            a, b = m[:pos], m[pos + 1 :]
            # llama.cpp keeps the first rank of a repeated pair; the tokenizers library needs
            # both halves and their concatenation in the vocab
            if (a, b) in seen or a not in vocab or b not in vocab or a + b not in vocab:
                continue
            seen.add((a, b))
            pairs.append((a, b))
        try:
            model = models.BPE(vocab=vocab, merges=pairs, ignore_merges=pre.ignore_merges)
            tok = Tokenizer(model)
            tok.pre_tokenizer = pre_tokenizers.Sequence(
                [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in pre.regexes]
                + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)]
            )
        except Exception as e:  # the library raises plain Exceptions
            raise FormatError(
                f"cannot build the BPE tokenizer from GGUF metadata: {e}",
                "the file's tokenizer.ggml.* entries are inconsistent",
            ) from None
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        """Ids of one raw text fragment."""
        if not text:
            return []
        try:
            return list(self._tok.encode(text, add_special_tokens=False).ids)
        except Exception as e:  # the library raises plain Exceptions
            raise FormatError(
                f"the GGUF BPE vocabulary cannot encode the text ({' '.join(str(e).split())[:200]})",
                "the file's tokenizer.ggml.* entries are inconsistent",
            ) from None
