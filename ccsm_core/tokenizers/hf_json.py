"""``tokenizer.json`` files through the Hugging Face ``tokenizers`` library."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError

BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>")
EOS_NAMES = ("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>")


class HFJsonTokenizer:
    """A ``tokenizers.Tokenizer``; ``encode`` adds BOS/EOS only when asked (``add_special``)."""

    def __init__(self, path: str | Path, text: str | None = None) -> None:
        """From a ``tokenizer.json`` file, or from its ``text`` (``path`` then names the source)."""
        from tokenizers import Tokenizer

        self.path = Path(path)
        try:
            self.tok = Tokenizer.from_str(text) if text is not None else Tokenizer.from_file(str(self.path))
        except Exception as e:  # the library raises plain Exceptions on bad JSON
            raise FormatError(
                f"{self.path}: not a readable tokenizer.json ({str(e).splitlines()[0]})",
                "use the tokenizer.json that came with the model",
            ) from None
        self.bos_id = self._first(BOS_NAMES)
        self.eos_id = self._first(EOS_NAMES)
        self.vocab_size = self.tok.get_vocab_size(with_added_tokens=True)

    def _first(self, names: tuple[str, ...]) -> int | None:
        for n in names:
            i = self.tok.token_to_id(n)
            if i is not None:
                return int(i)
        return None

    def encode(self, text: str, *, add_special: bool = True) -> list[int]:
        ids = list(self.tok.encode(text, add_special_tokens=False).ids)
        if add_special:
            ids = (
                ([self.bos_id] if self.bos_id is not None else [])
                + ids
                + ([self.eos_id] if self.eos_id is not None else [])
            )
        return ids

    def decode(self, ids: list[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True)
