"""A transformers tokenizer as GGUF ``tokenizer.*`` metadata, the way llama.cpp's converter writes
it, so that ccsm's GGUF tokenizer (and llama.cpp) read it alike.

- ``tokenizer.json`` with a byte-level BPE model -> ``tokenizer.ggml.model = gpt2``: tokens by id
  (padded to the model's vocabulary with ``[PAD{id}]``), token types (added special tokens are
  control, other added tokens user-defined), merges, and ``tokenizer.ggml.pre`` named from the
  pre-tokenizer (Llama 3's and Qwen2's split regexes, GPT-2's byte level, SmolLM's digits then
  byte level).
- ``tokenizer.model`` (SentencePiece) -> ``tokenizer.ggml.model = llama``: pieces, scores, types.
- BOS/EOS/UNK/PAD ids and add-BOS/EOS from ``tokenizer_config.json`` (else ``config.json`` and
  the post-processor), the chat template from ``tokenizer_config.json`` or ``chat_template.jinja``.
"""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

from ..errors import FormatError, ModelError
from ..limits import regular_file
from .hf_folder import read_json

NORMAL, UNKNOWN, CONTROL, USER_DEFINED, UNUSED, BYTE = 1, 2, 3, 4, 5, 6
_CONTRACTIONS = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)"
# tokenizer.json split regexes -> llama.cpp's pre-tokenizer names
SPLIT_PRE = {
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": (
        "llama-bpe"
    ),
    _CONTRACTIONS + r"|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+": "qwen2",
}
SPECIAL_KEYS = ("bos", "eos", "unk", "pad")
MAX_TOKENS = 1 << 24  # token ids a tokenizer file may give
MAX_TEMPLATE_BYTES = 1 << 20  # a chat_template.jinja


def _dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a part the file lacks or garbles)."""
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    """``value`` if it is a JSON array, else an empty one."""
    return value if isinstance(value, list) else []


def tokenizer_metadata(folder: Path, config: dict[str, Any], vocab_size: int, arch: str) -> dict[str, Any]:
    """GGUF tokenizer metadata for the tokenizer files in ``folder`` (``vocab_size``: the
    embedding rows; the token list is padded to it)."""
    tok_cfg = (
        read_json(folder / "tokenizer_config.json", "tokenizer config")
        if (folder / "tokenizer_config.json").is_file()
        else {}
    )
    tok_json = read_json(folder / "tokenizer.json", "tokenizer") if (folder / "tokenizer.json").is_file() else None
    model = _dict((tok_json or {}).get("model"))
    if tok_json is not None and model.get("type") == "BPE" and not model.get("byte_fallback"):
        md = _bpe(tok_json, tok_cfg, vocab_size, folder)
    elif (folder / "tokenizer.model").is_file():
        md = _sentencepiece(folder / "tokenizer.model", tok_json, vocab_size, arch)
    elif tok_json is not None:
        raise FormatError(
            f"{folder / 'tokenizer.json'}: a {model.get('type')!r} model"
            f"{' with byte fallback' if model.get('byte_fallback') else ''} is not supported"
            " without its tokenizer.model",
            "supported: byte-level BPE tokenizer.json, or SentencePiece tokenizer.model",
        )
    else:
        raise ModelError(
            f"{folder} has no tokenizer.json or tokenizer.model", "copy the model's tokenizer files beside it"
        )
    md.update(_specials(md["tokenizer.ggml.tokens"], tok_cfg, config, tok_json))
    template = _chat_template(folder, tok_cfg)
    if template is not None:
        md["tokenizer.chat_template"] = template
    return md


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _pad(tokens: list[str | None], types: list[int], vocab_size: int, where: str) -> list[str]:
    if len(tokens) > vocab_size:
        raise FormatError(f"{where}: {len(tokens)} tokens for an embedding of {vocab_size} rows", "the files differ")
    tokens = tokens + [None] * (vocab_size - len(tokens))
    types.extend([UNUSED] * (vocab_size - len(types)))
    out = []
    for i, t in enumerate(tokens):
        if t is None:
            out.append(f"[PAD{i}]")
            types[i] = UNUSED
        else:
            out.append(t)
    return out


def _bpe(tok: dict[str, Any], tok_cfg: dict[str, Any], vocab_size: int, folder: Path) -> dict[str, Any]:
    where = str(folder / "tokenizer.json")
    model = tok["model"]
    vocab = model.get("vocab")
    if not isinstance(vocab, dict):
        raise FormatError(f"{where}: the BPE model has no vocab", "restore the tokenizer file")
    added = [a for a in _list(tok.get("added_tokens")) if isinstance(a, dict)]
    ids = [*vocab.values(), *(a.get("id", -1) for a in added)]
    if not all(isinstance(i, int) and not isinstance(i, bool) and -1 <= i < MAX_TOKENS for i in ids):
        raise FormatError(f"{where}: token ids are not valid", "restore the tokenizer file")
    size = max([*ids, -1]) + 1
    tokens: list[str | None] = [None] * size
    types = [NORMAL] * size
    for text, i in vocab.items():
        tokens[i] = text
    for a in added:
        i, text = a.get("id"), a.get("content")
        if not isinstance(i, int) or not 0 <= i < size or not isinstance(text, str):
            raise FormatError(f"{where}: added token {a!r} is not valid", "restore the tokenizer file")
        tokens[i] = text
        types[i] = CONTROL if a.get("special") or looks_special(text) else USER_DEFINED
    merges = []
    for m in _list(model.get("merges")):
        if isinstance(m, list) and len(m) == 2 and all(isinstance(x, str) for x in m):
            merges.append(f"{m[0]} {m[1]}")
        elif isinstance(m, str):
            merges.append(m)
        else:
            raise FormatError(f"{where}: merge {m!r} is not valid", "restore the tokenizer file")
    return {
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": _pre_name(tok, tok_cfg, where),
        "tokenizer.ggml.tokens": _pad(tokens, types, vocab_size, where),
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.merges": merges,
    }


def looks_special(text: str) -> bool:
    """Added tokens llama.cpp's converter marks as control although not flagged special."""
    return (
        text in ("<pad>", "<mask>")
        or (text.startswith("<|") and text.endswith("|>"))
        or text.startswith(("<start_of_", "<end_of_"))
    )


def _pre_name(tok: dict[str, Any], tok_cfg: dict[str, Any], where: str) -> str:
    """llama.cpp's ``tokenizer.ggml.pre`` name for the tokenizer's pre-tokenizer."""
    pre = _dict(tok.get("pre_tokenizer"))
    parts = [_dict(p) for p in _list(pre.get("pretokenizers"))] if pre.get("type") == "Sequence" else [pre]
    kinds = [p.get("type") for p in parts]
    normalizer = _dict(tok.get("normalizer")).get("type")
    if normalizer not in (None, "NFC"):
        raise FormatError(f"{where}: normalizer {normalizer!r} is not supported", "byte-level BPE has none (or NFC)")
    if kinds == ["Split", "ByteLevel"] and not parts[1].get("use_regex", True):
        regex = _dict(parts[0].get("pattern")).get("Regex")
        if (
            isinstance(regex, str)
            and regex in SPLIT_PRE
            and parts[0].get("behavior") == "Isolated"
            and not parts[0].get("invert")
        ):
            return SPLIT_PRE[regex]
        raise FormatError(f"{where}: pre-tokenizer regex {regex!r} is not recognised", _PRE_HINT)
    if kinds == ["ByteLevel"] and parts[0].get("use_regex", True) and not parts[0].get("add_prefix_space"):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and parts[0].get("individual_digits") and parts[1].get("use_regex", True):
        return "starcoder" if tok_cfg.get("clean_up_tokenization_spaces", True) else "smollm"
    raise FormatError(f"{where}: pre-tokenizer {' + '.join(map(str, kinds)) or 'none'} is not recognised", _PRE_HINT)


_PRE_HINT = "supported: Llama 3's and Qwen2's split regexes, GPT-2's byte level, SmolLM's digits + byte level"


def _sentencepiece(path: Path, tok_json: dict[str, Any] | None, vocab_size: int, arch: str) -> dict[str, Any]:
    pieces, add_dummy_prefix = read_sentencepiece(path)
    tokens: list[str | None] = [p for p, _, _ in pieces]
    scores = [s for _, s, _ in pieces]
    types = [t for _, _, t in pieces]
    for a in _list((tok_json or {}).get("added_tokens")):  # added beyond the SentencePiece model
        i, text = _dict(a).get("id"), _dict(a).get("content")
        if isinstance(i, int) and isinstance(text, str) and len(tokens) <= i < vocab_size:
            tokens.extend([None] * (i + 1 - len(tokens)))
            types.extend([UNUSED] * (i + 1 - len(types)))
            tokens[i], types[i] = text, CONTROL if a.get("special") or looks_special(text) else USER_DEFINED
    padded = _pad(tokens, types, vocab_size, str(path))
    scores.extend([-1000.0] * (vocab_size - len(scores)))
    return {
        "tokenizer.ggml.model": "llama",
        "tokenizer.ggml.tokens": padded,
        "tokenizer.ggml.scores": scores,
        "tokenizer.ggml.token_type": types,
        "tokenizer.ggml.add_space_prefix": add_dummy_prefix and arch not in ("gemma", "gemma3"),
    }


def read_sentencepiece(path: Path) -> tuple[list[tuple[str, float, int]], bool]:
    """(pieces as (text, score, llama.cpp token type), add_dummy_prefix) of a SentencePiece
    ``ModelProto`` file, read field by field with every length checked."""
    try:
        data = path.read_bytes()
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror or e})", "check the file") from None
    kinds = {1: NORMAL, 2: UNKNOWN, 3: CONTROL, 4: USER_DEFINED, 5: UNUSED, 6: BYTE}
    pieces: list[tuple[str, float, int]] = []
    add_dummy_prefix = True
    for field, value in _fields(data, path):
        if field == 1 and isinstance(value, bytes):
            text, score, kind = "", 0.0, NORMAL
            for f, v in _fields(value, path):
                if f == 1 and isinstance(v, bytes):
                    text = v.decode("utf-8", "surrogateescape")
                elif f == 2 and isinstance(v, float):
                    score = v
                elif f == 3 and isinstance(v, int):
                    kind = kinds.get(v, NORMAL)
            pieces.append((text, score, kind))
        elif field == 3 and isinstance(value, bytes):  # normalizer spec
            for f, v in _fields(value, path):
                if f == 3 and isinstance(v, int):
                    add_dummy_prefix = bool(v)
    if not pieces:
        raise FormatError(f"{path}: no SentencePiece pieces", "use the model's tokenizer.model")
    return pieces, add_dummy_prefix


def _fields(data: bytes, path: Path) -> list[tuple[int, Any]]:
    """The (field number, value) pairs of one protobuf message: varints as int, 32-bit as float,
    length-delimited as bytes."""
    out: list[tuple[int, Any]] = []
    i, n = 0, len(data)

    def varint() -> int:
        nonlocal i
        value, shift = 0, 0
        while True:
            if i >= n or shift > 63:
                raise FormatError(f"{path}: truncated or broken SentencePiece model", "use the model's tokenizer.model")
            b = data[i]
            i += 1
            value |= (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value

    while i < n:
        key = varint()
        field, wire = key >> 3, key & 7
        if wire == 0:
            out.append((field, varint()))
        elif wire == 1:
            i += 8
            out.append((field, None))
        elif wire == 2:
            size = varint()
            if i + size > n:
                raise FormatError(f"{path}: truncated SentencePiece model", "use the model's tokenizer.model")
            out.append((field, data[i : i + size]))
            i += size
        elif wire == 5:
            if i + 4 > n:
                raise FormatError(f"{path}: truncated SentencePiece model", "use the model's tokenizer.model")
            out.append((field, struct.unpack("<f", data[i : i + 4])[0]))
            i += 4
        else:
            raise FormatError(
                f"{path}: not a SentencePiece model (wire type {wire})", "use the model's tokenizer.model"
            )
    if i != n:
        raise FormatError(f"{path}: truncated SentencePiece model", "use the model's tokenizer.model")
    return out


def _specials(
    tokens: list[str], tok_cfg: dict[str, Any], config: dict[str, Any], tok_json: dict[str, Any] | None
) -> dict[str, Any]:
    """Special token ids and add-BOS/EOS flags: ``tokenizer_config.json`` first, then ``config.json``."""
    index = {t: i for i, t in enumerate(tokens)}
    added = {
        a["content"]: a.get("id")
        for a in _list((tok_json or {}).get("added_tokens"))
        if isinstance(a, dict) and isinstance(a.get("content"), str)
    }
    md: dict[str, Any] = {}
    for key in SPECIAL_KEYS:
        text = _token_text(tok_cfg.get(f"{key}_token"))
        i = added.get(text, index.get(text)) if text is not None else None
        if i is None:
            value = config.get(f"{key}_token_id")
            i = value[0] if isinstance(value, list) and value else value
        if isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(tokens):
            md[f"tokenizer.ggml.{key}_token_id"] = i
    for key in ("bos", "eos"):
        flag = tok_cfg.get(f"add_{key}_token")
        if flag is None and tok_json is not None:
            flag = _post_processor_adds(tok_json, key, md.get(f"tokenizer.ggml.{key}_token_id"), tokens)
        if isinstance(flag, bool):
            md[f"tokenizer.ggml.add_{key}_token"] = flag
    return md


def _post_processor_adds(tok_json: dict[str, Any], key: str, token_id: int | None, tokens: list[str]) -> bool | None:
    """Whether the tokenizer.json post-processor puts the BOS (first) or EOS (last) token around
    a single sequence; None when it has no template."""
    post = _dict(tok_json.get("post_processor"))
    procs = _list(post.get("processors")) if post.get("type") == "Sequence" else [post]
    for p in procs:
        if isinstance(p, dict) and p.get("type") == "TemplateProcessing":
            single = [s for s in _list(p.get("single")) if isinstance(s, dict)]
            if not single or token_id is None:
                return False
            edge = single[0] if key == "bos" else single[-1]
            return _dict(edge.get("SpecialToken")).get("id") == tokens[token_id]
    return None


def _chat_template(folder: Path, tok_cfg: dict[str, Any]) -> str | None:
    template = tok_cfg.get("chat_template")
    if isinstance(template, list):  # named templates: the default one
        named = {
            t["name"]: t.get("template") for t in template if isinstance(t, dict) and isinstance(t.get("name"), str)
        }
        template = named.get("default")
    if isinstance(template, str):
        return template
    if template is not None:
        raise FormatError(
            f"{folder / 'tokenizer_config.json'}: chat_template is {type(template).__name__}, not a text",
            "restore the tokenizer config",
        )
    jinja = folder / "chat_template.jinja"
    if not jinja.exists():
        return None
    regular_file(jinja, "chat template")
    try:
        with open(jinja, "rb") as f:
            raw = f.read(MAX_TEMPLATE_BYTES + 1)
        if len(raw) > MAX_TEMPLATE_BYTES:
            raise FormatError(f"{jinja}: larger than {MAX_TEMPLATE_BYTES} bytes", "restore the chat template")
        return raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{jinja}: not readable ({e})", "restore the chat template") from None
