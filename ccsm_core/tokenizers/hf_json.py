"""``tokenizer.json`` files through the Hugging Face ``tokenizers`` library."""

from __future__ import annotations

from pathlib import Path

from ..errors import FormatError
from ..limits import loads_json, regular_file
from ..token_ids import token_ids

BOS_NAMES = ("<|begin_of_text|>", "<s>", "<bos>", "<|endoftext|>")
EOS_NAMES = ("<|end_of_text|>", "</s>", "<eos>", "<|endoftext|>")
_HINT = "use the tokenizer.json that came with the model"


def _read(path: Path) -> str:
    regular_file(path, "tokenizer file")
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise FormatError(f"{path}: not a readable tokenizer.json ({e})", _HINT) from None


def _cause(e: Exception) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__


class HFJsonTokenizer:
    """A ``tokenizers.Tokenizer``; ``encode`` adds BOS/EOS only when asked (``add_special``)."""

    def __init__(self, path: str | Path, text: str | None = None) -> None:
        """From a ``tokenizer.json`` file, or from its ``text`` (``path`` then names the source)."""
        from tokenizers import Tokenizer

        self.path = Path(path)
        if text is None:
            text = _read(self.path)
        loads_json(text, str(self.path), _HINT)  # nesting and number bounds before the library parses it
        try:
            self.tok = Tokenizer.from_str(text)
        except Exception as e:  # the library raises plain Exceptions on bad JSON
            raise FormatError(f"{self.path}: not a readable tokenizer.json ({_cause(e)})", _HINT) from None
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
        try:
            ids = list(self.tok.encode(text, add_special_tokens=False).ids)
        except Exception as e:  # the library raises plain Exceptions on a broken model
            raise self._broken("encode", e) from None
        if add_special:
            ids = (
                ([self.bos_id] if self.bos_id is not None else [])
                + ids
                + ([self.eos_id] if self.eos_id is not None else [])
            )
        return ids

    def decode(self, ids: list[int]) -> str:
        ids = token_ids(ids, self.vocab_size).tolist()
        try:
            return str(self.tok.decode(ids, skip_special_tokens=True))
        except Exception as e:  # as in encode
            raise self._broken("decode", e) from None

    def _broken(self, what: str, e: Exception) -> FormatError:
        return FormatError(f"{self.path}: the tokenizer cannot {what} ({_cause(e)})", _HINT)
