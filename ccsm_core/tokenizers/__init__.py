"""Text tokenizers and how one is chosen for a source (a file or GGUF metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..errors import FormatError
from ..plugin_code import guarded


class Tokenizer(Protocol):
    """What every tokenizer offers."""

    bos_id: int | None
    eos_id: int | None
    vocab_size: int

    def encode(self, text: str, *, add_special: bool = True) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


def load_tokenizer(source: Any, name: str | None = None) -> Tokenizer:
    """The tokenizer for ``source``: by registered ``name``, else the first whose sniff accepts it.

    A plugin's sniff or factory that raises, or a factory that returns no tokenizer, is a
    `PluginError` naming the plugin."""
    from ..plugins import registry

    reg = registry("tokenizers")
    if name:
        return _create(reg.get(name), source)
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise FormatError(f"tokenizer file {source} does not exist", "pass --tokenizer PATH")
    for entry in reg:
        if entry.sniff is None:
            continue
        with guarded(entry.plugin, f"the sniff of tokenizer {entry.name!r}"):
            accepts = bool(entry.sniff(source))
        if accepts:
            return _create(entry, source)
    raise FormatError(
        f"no tokenizer understands {source}", "use a tokenizer.json (Hugging Face) or a SentencePiece .model file"
    )


def _create(entry: Any, source: Any) -> Tokenizer:
    call = guarded(entry.plugin, f"the factory of tokenizer {entry.name!r}")
    with call:
        tok = entry.factory(source)
    lacks = [m for m in ("encode", "decode") if not callable(getattr(tok, m, None))]
    if lacks:
        raise call.fail(f"returned {type(tok).__name__}, which lacks {lacks[0]}(), instead of a tokenizer")
    return tok
