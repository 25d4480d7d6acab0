"""SentencePiece ``.model`` files through the ``sentencepiece`` library."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from ..limits import regular_file
from ..token_ids import token_ids


class SentencePieceTokenizer:
    """A SentencePiece processor; ``encode`` adds BOS/EOS only when asked (``add_special``)."""

    def __init__(self, path: str | Path) -> None:
        import sentencepiece as spm

        self.path = regular_file(path, "tokenizer file")  # the C++ reader would block on a FIFO
        self.sp = spm.SentencePieceProcessor()
        try:
            self.sp.Load(str(self.path))
        except (OSError, RuntimeError) as e:
            raise FormatError(
                f"{self.path}: not a SentencePiece model ({e})", "use the tokenizer.model that came with the model"
            ) from None
        self.bos_id = self.sp.bos_id() if self.sp.bos_id() >= 0 else None
        self.eos_id = self.sp.eos_id() if self.sp.eos_id() >= 0 else None
        self.vocab_size = self.sp.get_piece_size()

    def encode(self, text: str, *, add_special: bool = True) -> list[int]:
        ids = list(self.sp.encode(text))
        if add_special:
            ids = (
                ([self.bos_id] if self.bos_id is not None else [])
                + ids
                + ([self.eos_id] if self.eos_id is not None else [])
            )
        return ids

    def decode(self, ids: list[int]) -> str:
        ids = token_ids(ids, self.vocab_size).tolist()
        return str(self.sp.decode(ids))
