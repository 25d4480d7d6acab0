"""Text tokenizers built from GGUF metadata that give exactly llama.cpp's ids.

Supports ``tokenizer.ggml.model`` ``gpt2`` (byte-level BPE, pre-tokenizer chosen by
``tokenizer.ggml.pre``; see :mod:`.gguf_bpe`) and ``llama`` (SentencePiece scores with byte
fallback; see :mod:`.gguf_spm`). Special tokens in the text are split out first, as llama.cpp's
``tokenizer_st_partition`` does: longest token text first, control/unknown tokens only with
``parse_special``, user-defined tokens always.
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Iterable, Mapping
from enum import IntFlag
from pathlib import Path, PurePath
from typing import Any

from ..errors import FormatError, UsageError
from . import gguf_vocab as vocab


class Attr(IntFlag):
    """llama.cpp's ``llama_token_attr`` bits."""

    UNDEFINED = 0
    UNKNOWN = 1 << 0
    UNUSED = 1 << 1
    NORMAL = 1 << 2
    CONTROL = 1 << 3
    USER_DEFINED = 1 << 4
    BYTE = 1 << 5
    RSTRIP = 1 << 8


# tokenizer.ggml.token_type values (llama_token_type) -> attributes
_TYPE_ATTR = {1: Attr.NORMAL, 2: Attr.UNKNOWN, 3: Attr.CONTROL, 4: Attr.USER_DEFINED, 5: Attr.UNUSED, 6: Attr.BYTE}
# token texts llama.cpp treats as end-of-generation (and therefore control)
EOG_TEXTS = frozenset(
    [
        "<|eot_id|>",
        "<|im_end|>",
        "<|end|>",
        "<|return|>",
        "<|call|>",
        "<|flush|>",
        "<|calls|>",
        "<end_of_turn>",
        "<|endoftext|>",
        "</s>",
        "<|eom_id|>",
        "<EOT>",
        "_<EOT>",
        "[EOT]",
        "[EOS]",
        "<|end_of_text|>",
        "<end_of_utterance>",
        "<eos>",
        "<turn|>",
        "<|tool_response>",
        "<｜end▁of▁sentence｜>",
        "[e~[",
    ]
)
# texts llama.cpp takes as the end-of-turn token when tokenizer.ggml.eot_token_id is unset
_EOT_TEXTS = (
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
)
# fill-in-the-middle tokens llama.cpp finds by text (and marks control) when their id is unset
_FIM_TEXTS = {
    "fim_pre": (
        "<|fim_prefix|>",
        "<fim-prefix>",
        "<fim_prefix>",
        "<｜fim▁begin｜>",
        "<PRE>",
        "▁<PRE>",
        "<|code_prefix|>",
        "<|prefix|>",
    ),
    "fim_suf": (
        "<|fim_suffix|>",
        "<fim-suffix>",
        "<fim_suffix>",
        "<｜fim▁hole｜>",
        "<SUF>",
        "▁<SUF>",
        "<|code_suffix|>",
        "<|suffix|>",
    ),
    "fim_mid": (
        "<|fim_middle|>",
        "<fim-middle>",
        "<fim_middle>",
        "<｜fim▁end｜>",
        "<MID>",
        "▁<MID>",
        "<|code_middle|>",
        "<|middle|>",
    ),
    "fim_pad": ("<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"),
    "fim_rep": ("<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"),
    "fim_sep": ("<|file_sep|>",),
}
_ALWAYS_USER_DEFINED = ("<|channel|>", "<|message|>", "<|start|>", "<|constrain|>")
_C_SPACE = " \t\n\v\f\r"
_K = "tokenizer.ggml."


class GGUFTokenizer:
    """A llama.cpp-compatible tokenizer for one GGUF vocabulary."""

    def __init__(self, metadata: Mapping[str, Any]) -> None:
        md = metadata
        self.model = str(md.get(_K + "model", ""))
        if self.model not in ("gpt2", "llama"):
            raise FormatError(
                f"GGUF tokenizer model {self.model!r} is not supported (supported: gpt2, llama)",
                "use a model with a BPE (gpt2) or SentencePiece (llama) vocabulary",
            )
        tokens = vocab.tokens(md)
        n = len(tokens)
        self.tokens: list[str] = [t if t else f"[EMPTY_{i}]" for i, t in enumerate(tokens)]
        self.token_to_id: dict[str, int] = {}
        for i, t in enumerate(self.tokens):
            if self.token_to_id.setdefault(t, i) != i:
                raise FormatError(
                    f"GGUF vocabulary has token {t!r} twice (ids {self.token_to_id[t]} and {i})", "the file is corrupt"
                )
        self.scores = vocab.scores(md, n)
        types = vocab.token_types(md, n)
        self.attrs: list[Attr] = (
            [_TYPE_ATTR.get(t, Attr.UNDEFINED) for t in types] if types is not None else [Attr.NORMAL] * n
        )
        self.vocab_size = n

        bpe = self.model == "gpt2"
        pre = None
        if bpe:
            from .gguf_bpe import pre_tokenizer

            pre = pre_tokenizer(md.get(_K + "pre"))
        defaults = (None if pre and pre.bos_null else 11, 11, None) if bpe else (1, 2, 0)
        self.bos_id = vocab.special_id(md, "bos_token_id", defaults[0], n)
        self.eos_id = vocab.special_id(md, "eos_token_id", defaults[1], n)
        self.unk_id = vocab.special_id(md, "unknown_token_id", defaults[2], n)
        self.eot_id = vocab.special_id(md, "eot_token_id", None, n)
        self.eom_id = vocab.special_id(md, "eom_token_id", None, n)
        self.add_bos = vocab.flag(md, "add_bos_token", pre.add_bos if pre else True)
        self.add_eos = vocab.flag(md, "add_eos_token", False)
        self.add_space_prefix = vocab.flag(md, "add_space_prefix", not bpe)
        self.clean_spaces = pre.clean_spaces if pre else False
        if self.add_bos and self.bos_id is None:
            raise FormatError(
                "GGUF metadata asks to add a BOS token but defines none",
                "the file's tokenizer.ggml.bos_token_id is missing",
            )
        if self.add_eos and self.eos_id is None:
            raise FormatError(
                "GGUF metadata asks to add an EOS token but defines none",
                "the file's tokenizer.ggml.eos_token_id is missing",
            )
        self.eog_ids = self._mark_special_texts(md)
        self._special = self._special_cache(str(md.get("general.name", "")))
        self._pieces: list[bytes] | None = None

        if bpe:
            from .gguf_bpe import BPEModel

            self._bpe = BPEModel(self.tokens, vocab.merges(md), pre)  # type: ignore[arg-type]
        else:
            from .gguf_spm import byte_token_ids

            if self.scores is None:
                self.scores = [0.0] * n
            self._byte_ids = byte_token_ids(self.token_to_id, self.unk_id)

    def _mark_special_texts(self, md: Mapping[str, Any]) -> frozenset[int]:
        """Apply llama.cpp's by-text fix-ups of token attributes; return the end-of-generation ids."""
        eog: set[int] = set()
        for name, texts in _FIM_TEXTS.items():
            tid = vocab.special_id(md, name + "_token_id", None, self.vocab_size)
            if tid is None:
                found = [self.token_to_id[t] for t in texts if t in self.token_to_id]
                tid = min(found) if found else None
                if tid is not None:
                    self.attrs[tid] |= Attr.CONTROL
            if tid is not None and name in ("fim_pad", "fim_rep", "fim_sep"):
                eog.add(tid)
        for text in EOG_TEXTS:
            tid = self.token_to_id.get(text)
            if tid is not None:
                eog.add(tid)
                self.attrs[tid] |= Attr.CONTROL
        if self.eot_id is None:
            self.eot_id = next((self.token_to_id[t] for t in _EOT_TEXTS if t in self.token_to_id), None)
        for text in _ALWAYS_USER_DEFINED:
            if text in self.token_to_id:
                self.attrs[self.token_to_id[text]] = Attr.USER_DEFINED
        eog.update(i for i in (self.eos_id, self.eot_id, self.eom_id) if i is not None)
        return frozenset(eog)

    def _special_cache(self, model_name: str) -> list[int]:
        """Ids split out of raw text before tokenizing, longest text (in bytes) first."""
        ids = [i for i, a in enumerate(self.attrs) if a & (Attr.CONTROL | Attr.USER_DEFINED | Attr.UNKNOWN)]
        ids.sort(key=lambda i: (-len(self.tokens[i].encode("utf-8", "surrogateescape")), i))
        name = model_name.lower()
        if "phi-3" in name or "phi3" in name:  # llama.cpp: phi-3 special tokens eat spaces after
            for i in ids + [self.token_to_id.get("</s>", -1)]:
                if i >= 0:
                    self.attrs[i] |= Attr.RSTRIP
            for t in ("<unk>", "<s>", "<|endoftext|>"):
                if t in self.token_to_id:
                    self.attrs[self.token_to_id[t]] &= ~Attr.RSTRIP
        return ids

    # ---- encoding -----------------------------------------------------------------------

    def _partition(self, text: str, parse_special: bool) -> list[str | int]:
        """``text`` split into raw fragments (str) and special-token ids (int)."""
        frags: list[str | int] = [text] if text else []
        for tid in self._special:
            attr = self.attrs[tid]
            if not parse_special and attr & (Attr.CONTROL | Attr.UNKNOWN):
                continue
            tok = self.tokens[tid]
            if not any(isinstance(f, str) and tok in f for f in frags):
                continue
            out: list[str | int] = []
            for f in frags:
                if not isinstance(f, str) or tok not in f:
                    out.append(f)
                    continue
                rest = f
                while True:
                    pos = rest.find(tok)
                    if pos < 0:
                        if rest:
                            out.append(rest)
                        break
                    if pos > 0:
                        out.append(rest[:pos])
                    out.append(tid)
                    rest = rest[pos + len(tok) :]
                    if attr & Attr.RSTRIP:
                        rest = rest.lstrip(_C_SPACE)
            frags = out
        return frags

    def encode(self, text: str, *, add_special: bool = True, parse_special: bool = True) -> list[int]:
        """Token ids of ``text``, as ``llama_tokenize(text, add_special, parse_special)``.

        ``add_special`` adds BOS/EOS where the model's ``add_bos_token``/``add_eos_token`` say so;
        ``parse_special`` turns control-token texts such as ``<|im_start|>`` into their ids.
        """
        if not isinstance(text, str):
            raise UsageError(f"text to tokenize must be a str, not {type(text).__name__}", "decode bytes to str first")
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:
            raise UsageError(
                f"text to tokenize is not valid Unicode ({e.reason} at {e.start})",
                "remove or replace the broken characters",
            ) from None
        out: list[int] = []
        if add_special and self.add_bos:
            out.append(self.bos_id)  # type: ignore[arg-type]
        prev_special = True
        for frag in self._partition(text, parse_special):
            if isinstance(frag, int):
                out.append(frag)
                prev_special = True
            elif self.model == "gpt2":
                out.extend(self._bpe.encode(frag))
            else:
                from .gguf_spm import spm_encode

                if self.add_space_prefix and prev_special:
                    frag = " " + frag
                out.extend(spm_encode(frag.replace(" ", "▁"), self.token_to_id, self.scores, self._byte_ids))  # type: ignore[arg-type]
                prev_special = False
        if add_special and self.add_eos:
            out.append(self.eos_id)  # type: ignore[arg-type]
        return out

    # ---- decoding -----------------------------------------------------------------------

    def _piece(self, i: int) -> bytes:
        text, attr = self.tokens[i], self.attrs[i]
        if attr & (Attr.UNKNOWN | Attr.CONTROL | Attr.USER_DEFINED):
            return text.encode("utf-8", "surrogateescape")
        if attr & Attr.NORMAL:
            if self.model == "gpt2":
                from .gguf_bpe import decode_byte_level

                return decode_byte_level(text)
            return text.replace("▁", " ").encode("utf-8", "surrogateescape")
        if attr & Attr.BYTE:
            try:
                return bytes([int(text[3:5], 16)])
            except ValueError:
                return b""
        return b""

    def token_to_bytes(self, token_id: int, *, special: bool = True) -> bytes:
        """The bytes token ``token_id`` stands for (``llama_token_to_piece``).

        Control and unknown tokens give their text only when ``special`` is true.
        """
        if not 0 <= token_id < self.vocab_size:
            raise UsageError(
                f"token id {token_id} is outside the vocabulary (0..{self.vocab_size - 1})",
                "the ids come from another model",
            )
        if not special and self.attrs[token_id] & (Attr.UNKNOWN | Attr.CONTROL):
            return b""
        if self._pieces is None:
            self._pieces = [self._piece(i) for i in range(self.vocab_size)]
        return self._pieces[token_id]

    def token_to_piece(self, token_id: int, *, special: bool = True) -> str:
        """The text of one token (a lone partial UTF-8 sequence shows as U+FFFD)."""
        return self.token_to_bytes(token_id, special=special).decode("utf-8", "replace")

    def decode(self, ids: Iterable[int], *, skip_special: bool = True) -> str:
        """Text of ``ids``, as ``llama_detokenize(remove_special=unparse_special^1)``.

        With ``skip_special`` a leading BOS / trailing EOS the model adds is dropped and control
        tokens render as nothing. The space SentencePiece puts before the first word is removed
        (llama.cpp keeps it when a BOS was dropped; here ``decode(encode(t)) == t`` either way).
        """
        ids = [int(i) for i in ids]
        if skip_special and self.add_bos and ids and ids[0] == self.bos_id:
            ids = ids[1:]
        if skip_special and self.add_eos and ids and ids[-1] == self.eos_id:
            ids = ids[:-1]
        parts = [self.token_to_bytes(i, special=not skip_special) for i in ids]
        if parts and self.add_space_prefix and parts[0].startswith(b" "):
            parts[0] = parts[0][1:]
        data = b"".join(parts)
        if self.clean_spaces:
            data = clean_spaces(data)
        return data.decode("utf-8", "replace")

    def incremental_decoder(self, *, special: bool = False) -> IncrementalDecoder:
        """A streaming decoder: feed ids one at a time, get only complete characters back."""
        return IncrementalDecoder(self, special=special)


class IncrementalDecoder:
    """Streams token ids to text without ever splitting a multi-byte UTF-8 character.

    Pieces are used as is (no leading-space removal, no clean-up), as llama.cpp streams them.
    """

    def __init__(self, tokenizer: GGUFTokenizer, *, special: bool = False) -> None:
        self.tokenizer = tokenizer
        self.special = special
        self._utf8 = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, token_id: int) -> str:
        """The text that became complete with ``token_id`` (possibly empty)."""
        return self._utf8.decode(self.tokenizer.token_to_bytes(token_id, special=self.special))

    def flush(self) -> str:
        """Whatever is pending at the end (an incomplete sequence becomes U+FFFD)."""
        return self._utf8.decode(b"", final=True)


def clean_spaces(text: bytes) -> bytes:
    """llama.cpp's ``clean_spaces`` pass of ``detokenize`` (" ?" -> "?", " 's" -> "'s", ...)."""
    t = bytearray(text)
    n = len(t)
    # pass 1: drop a space before ? ! . ,
    total = 1 if n else 0
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x in b"?!.,":
            total -= 1
        t[total] = x
        total += 1
    # pass 2: " ' " -> "'"
    n, total, i = total, (1 if total else 0), 1
    while i < n:
        x = t[i]
        if x == 0x27 and i + 1 < n and t[i - 1] == 0x20 and t[i + 1] == 0x20:
            total -= 1
            i += 1
            t[i] = 0
        t[total] = x
        total += 1
        i += 1
    # pass 3: " 's" " 'm" " 're" " 've" -> no space
    n, total = total, (1 if total else 0)
    for i in range(1, n):
        x = t[i]
        if t[i - 1] == 0x20 and x == 0x27 and i + 1 < n:
            x1 = t[i + 1]
            if x1 in b"sm":
                total -= 1
            elif x1 not in b"td" and i + 2 < n and bytes(t[i + 1 : i + 3]) in (b"re", b"ve"):
                total -= 1
        t[total] = x
        total += 1
    return bytes(t[:total])


def _metadata_of(source: Any) -> Mapping[str, Any] | None:
    if isinstance(source, Mapping):
        return source
    md = getattr(source, "metadata", None)
    return md if isinstance(md, Mapping) else None


def sniff(source: Any) -> bool:
    """True if ``source`` (GGUF metadata, a WeightSource, or a .gguf path) carries a vocabulary."""
    if isinstance(source, (str, PurePath)):
        return str(source).endswith(".gguf")
    md = _metadata_of(source)
    model = md.get(_K + "model") if md is not None else None
    return isinstance(model, str) and model in ("gpt2", "llama") and _K + "tokens" in md  # type: ignore[operator]


def tokenizer_from_gguf(source: Mapping[str, Any] | Any) -> GGUFTokenizer:
    """The tokenizer for GGUF metadata (a dict, a ``WeightSource``, or a path to a .gguf file)."""
    if isinstance(source, (str, os.PathLike)):
        from ..formats.gguf_reader import read_header

        source = read_header(Path(source)).metadata
    md = _metadata_of(source)
    if md is None:
        raise FormatError(
            f"cannot read a GGUF vocabulary from a {type(source).__name__}",
            "pass GGUF metadata, a loaded GGUF file, or its path",
        )
    return GGUFTokenizer(md)


__all__ = ["Attr", "GGUFTokenizer", "IncrementalDecoder", "clean_spaces", "sniff", "tokenizer_from_gguf"]
