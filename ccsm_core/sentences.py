"""Split long text into sentences, each short enough to speak in one generation.

`split_sentences` asks `sentencex <https://github.com/wikimedia/sentencex>`_ where sentences end
(abbreviations, decimals, quotes and the terminators of many scripts: ``。 ！ ？ । ؟``), then:

- blank lines (paragraph breaks) always end a sentence; other whitespace runs become one space;
- a piece with no letter or digit (``...``, ``—``, ``***``) joins its neighbour, the one before
  it when there is one;
- a sentence longer than ``max_chars`` is cut at its last clause mark (``; : , —`` and the
  CJK ``， ； ： 、``) in the back two thirds of the limit, else at its last space, else hard
  (a single over-long token), so no piece is longer than ``max_chars``.

Languages: ``language`` is an ISO 639 code, optionally with a region or script (``en``,
``en-US``, ``pt_BR``, ``zh-Hant``, ``deu``). Only the language part is used: sentencex has
rules for about 30 languages and falls back to a related language or its generic rules
(which know the terminators of most scripts) for the rest. A two-letter code must be an
ISO 639-1 code; a three-letter code is passed on as written (common ISO 639-2 codes such as
``deu`` become their two-letter form). Anything else is a `UsageError`.
"""

from __future__ import annotations

import re
import unicodedata

from sentencex import segment

from ccsm_core.errors import UsageError

__all__ = ["check_language", "split_sentences"]

# ISO 639-1: every two-letter language code.
_ISO639_1 = frozenset(
    """aa ab ae af ak am an ar as av ay az ba be bg bh bi bm bn bo br bs ca ce ch co cr cs cu cv cy
    da de dv dz ee el en eo es et eu fa ff fi fj fo fr fy ga gd gl gn gu gv ha he hi ho hr ht hu hy
    hz ia id ie ig ii ik io is it iu ja jv ka kg ki kj kk kl km kn ko kr ks ku kv kw ky la lb lg li
    ln lo lt lu lv mg mh mi mk ml mn mr ms mt my na nb nd ne ng nl nn no nr nv ny oc oj om or os pa
    pi pl ps pt qu rm rn ro ru rw sa sc sd se sg si sk sl sm sn so sq sr ss st su sv sw ta te tg th
    ti tk tl tn to tr ts tt tw ty ug uk ur uz ve vi vo wa wo xh yi yo za zh zu""".split()
)

# ISO 639-2 codes of the languages sentencex has its own rules for (and a few more common ones),
# so that ``deu`` gets the German rules rather than the generic ones.
_ISO639_2 = {
    "amh": "am", "ara": "ar", "arm": "hy", "ben": "bn", "bul": "bg", "bur": "my", "cat": "ca",
    "ces": "cs", "chi": "zh", "cze": "cs", "dan": "da", "deu": "de", "dut": "nl", "ell": "el",
    "eng": "en", "fas": "fa", "fin": "fi", "fra": "fr", "fre": "fr", "ger": "de", "gre": "el",
    "guj": "gu", "heb": "he", "hin": "hi", "hye": "hy", "ita": "it", "jpn": "ja", "kan": "kn",
    "kaz": "kk", "kor": "ko", "mal": "ml", "mar": "mr", "mya": "my", "nld": "nl", "pan": "pa",
    "per": "fa", "pol": "pl", "por": "pt", "rus": "ru", "slk": "sk", "slo": "sk", "spa": "es",
    "tam": "ta", "tel": "te", "tur": "tr", "ukr": "uk", "urd": "ur", "zho": "zh",
}  # fmt: skip

_TAG = re.compile(r"([a-z]{2,3})(?:-[a-z0-9]{1,8})*")

# Marks a long sentence may be cut after. The ASCII ones only when a space follows, so that
# "1,000", "10:30" and "http://" stay whole.
_CLAUSE_MARKS_SPACED = frozenset(";:,")
_CLAUSE_MARKS = frozenset("—–，；：、")


def check_language(language: str) -> str:
    """The code sentencex is given for ``language`` (lower case, language part only), or `UsageError`."""
    tag = language.strip().lower().replace("_", "-") if isinstance(language, str) else ""
    m = _TAG.fullmatch(tag)
    code = m.group(1) if m else ""
    code = _ISO639_2.get(code, code)
    if not m or (len(code) == 2 and code not in _ISO639_1):
        raise UsageError(
            f"unknown language code {language!r}",
            "give an ISO 639 code such as en, de, fr, ja, zh or hi (a region such as en-US is fine)",
        )
    return code


def split_sentences(text: str, language: str = "en", *, max_chars: int = 400) -> list[str]:
    """The sentences of ``text`` in order, stripped, whitespace collapsed, none over ``max_chars``.

    Raises `UsageError` for empty text, text with no letter or digit, an unknown ``language``
    or a ``max_chars`` below 1.
    """
    code = check_language(language)
    if isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1:
        raise UsageError(f"max_chars must be a positive integer, got {max_chars!r}", "use e.g. 400")
    if not isinstance(text, str) or not text.strip():
        raise UsageError("text is empty", "give the words to speak")
    if not _has_word(text):
        raise UsageError(f"text has no letter or digit to speak: {text.strip()[:40]!r}", "give the words to speak")

    pieces: list[tuple[str, bool]] = []  # (sentence, whether whitespace comes before it)
    for paragraph in _paragraphs(text):
        space = True
        for raw in _segment(code, paragraph):
            sentence = " ".join(raw.split())
            if sentence:
                pieces.append((sentence, space or raw[0].isspace()))
                space = raw[-1].isspace()
            else:
                space = True
    out: list[str] = []
    for sentence in _merge_wordless(pieces):
        out.extend(_split_long(sentence, max_chars))
    return _merge_wordless_cut(out, max_chars)


def _has_word(text: str) -> bool:
    return any(c.isalnum() for c in text)


def _paragraphs(text: str) -> list[str]:
    """Blocks of non-blank lines, each line's whitespace runs made single ASCII spaces.

    sentencex sees line breaks (they end list items) but never other whitespace than spaces.
    """
    paragraphs: list[list[str]] = [[]]
    for line in text.splitlines():
        words = line.split()
        if words:
            paragraphs[-1].append(" ".join(words))
        elif paragraphs[-1]:
            paragraphs.append([])
    return ["\n".join(lines) for lines in paragraphs if lines]


def _segment(code: str, paragraph: str) -> list[str]:
    """sentencex's pieces of ``paragraph`` (which they concatenate back to), or the paragraph whole."""
    try:
        pieces = list(segment(code, paragraph))
    except BaseException as exc:  # a failing segmenter must not lose the text (pyo3 panics are BaseException)
        if isinstance(exc, (KeyboardInterrupt, SystemExit, GeneratorExit)):
            raise
        return [paragraph]
    return pieces if "".join(pieces) == paragraph else [paragraph]


def _merge_wordless(pieces: list[tuple[str, bool]]) -> list[str]:
    """Join each piece without a letter or digit to the piece before it (or, first, after it)."""
    out: list[str] = []
    lead = ""  # wordless pieces before the first one with a word
    for text, space in pieces:
        sep = " " if space else ""
        if not _has_word(text):
            if out:
                out[-1] += sep + text
            else:
                lead += (sep if lead else "") + text
        elif lead:
            out.append(lead + sep + text)
            lead = ""
        else:
            out.append(text)
    if lead:
        out.append(lead)
    return out


def _split_long(sentence: str, max_chars: int) -> list[str]:
    """``sentence`` (whitespace already single spaces) cut into pieces of at most ``max_chars``."""
    pieces: list[str] = []
    rest = sentence
    while len(rest) > max_chars:
        cut = _cut_point(rest, max_chars)
        pieces.append(rest[:cut].rstrip())
        rest = rest[cut:].lstrip()
    if rest:
        pieces.append(rest)
    return pieces


def _cut_point(text: str, max_chars: int) -> int:
    """Where to cut ``text`` (longer than ``max_chars``): the head ``text[:cut]`` fits and has a character.

    The last clause mark whose head is at least a third of the limit, else the last space,
    else ``max_chars`` moved back off combining marks (so a letter keeps its accents).
    """
    for i in range(max_chars - 1, max(max_chars // 3, 1) - 2, -1):
        c = text[i]
        if c in _CLAUSE_MARKS or (c in _CLAUSE_MARKS_SPACED and text[i + 1] == " "):
            return i + 1
    space = text.rfind(" ", 1, max_chars + 1)
    if space > 0:
        return space
    cut = max_chars
    while cut > 1 and _inside_cluster(text, cut):
        cut -= 1
    return cut


def _inside_cluster(text: str, i: int) -> bool:
    """Whether ``text[i]`` belongs with the character before it: a combining mark, a joiner or a
    variation selector, or a letter after a virama (an Indic conjunct)."""
    c, before = text[i], text[i - 1]
    return (
        unicodedata.category(c) in ("Mn", "Mc", "Me")
        or c in "\u200c\u200d"
        or "\ufe00" <= c <= "\ufe0f"
        or before == "\u200d"
        or unicodedata.combining(before) == 9
    )


def _merge_wordless_cut(pieces: list[str], max_chars: int) -> list[str]:
    """After cutting, join a piece without a letter or digit to a neighbour where the two fit."""
    pieces = list(pieces)
    out: list[str] = []
    for i, piece in enumerate(pieces):
        if _has_word(piece) or len(pieces) == 1:
            out.append(piece)
        elif out and len(out[-1]) + 1 + len(piece) <= max_chars:
            out[-1] += " " + piece
        elif i + 1 < len(pieces) and len(piece) + 1 + len(pieces[i + 1]) <= max_chars:
            pieces[i + 1] = piece + " " + pieces[i + 1]
        else:
            out.append(piece)
    return out
