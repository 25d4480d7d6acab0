"""Text tokenizers and how one is chosen for a source (a file or GGUF metadata)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from ..errors import FormatError


class Tokenizer(Protocol):
    """What every tokenizer offers."""

    bos_id: int | None
    eos_id: int | None
    vocab_size: int

    def encode(self, text: str, *, add_special: bool = True) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


def load_tokenizer(source: Any, name: str | None = None) -> Tokenizer:
    """The tokenizer for ``source``: by registered ``name``, else the first whose sniff accepts it."""
    from ..plugins import registry

    reg = registry("tokenizers")
    if name:
        return reg.create(name, source)
    if isinstance(source, (str, Path)) and not Path(source).exists():
        raise FormatError(f"tokenizer file {source} does not exist", "pass --tokenizer PATH")
    for entry in reg:
        if entry.sniff is not None and entry.sniff(source):
            return entry.factory(source)
    raise FormatError(
        f"no tokenizer understands {source}", "use a tokenizer.json (Hugging Face) or a SentencePiece .model file"
    )
