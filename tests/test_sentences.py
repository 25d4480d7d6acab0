"""ccsm_core.sentences: where long text is split for speech."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ccsm_core.errors import UsageError
from ccsm_core.sentences import check_language, split_sentences

CASES = [
    # (id, language, text, expected)
    ("plain", "en", "Hello there. How are you?", ["Hello there.", "How are you?"]),
    ("no-terminator", "en", "No full stop at the end", ["No full stop at the end"]),
    ("dr", "en", "Dr. Smith arrived. He sat down.", ["Dr. Smith arrived.", "He sat down."]),
    (
        "mr-mrs-usa",
        "en",
        "Mr. and Mrs. Jones live in the U.S.A. They like it.",
        ["Mr. and Mrs. Jones live in the U.S.A.", "They like it."],
    ),
    ("us-mid-sentence", "en", "The U.S. economy grew. Stocks rose.", ["The U.S. economy grew.", "Stocks rose."]),
    ("eg", "en", "Bring fruit, e.g. apples. Or not.", ["Bring fruit, e.g. apples.", "Or not."]),
    ("ie-etc", "en", "Bring fruit, i.e. apples, etc. and more.", ["Bring fruit, i.e. apples, etc. and more."]),
    ("initials", "en", "A. B. Smith wrote it. Done.", ["A. B. Smith wrote it.", "Done."]),
    ("prof-st", "en", "Prof. X went to St. Louis. Fine.", ["Prof. X went to St. Louis.", "Fine."]),
    ("money", "en", "It costs $3.50. That is cheap.", ["It costs $3.50.", "That is cheap."]),
    ("decimals", "en", "Pi is about 3.14159. Version 2.0 shipped.", ["Pi is about 3.14159.", "Version 2.0 shipped."]),
    ("score", "en", "He scored 9.5/10. Great!", ["He scored 9.5/10.", "Great!"]),
    ("am-mid", "en", "We meet at 10 a.m. tomorrow. Be there.", ["We meet at 10 a.m. tomorrow.", "Be there."]),
    ("am-end", "en", "We meet at 10 a.m. Bring coffee.", ["We meet at 10 a.m.", "Bring coffee."]),
    ("pm-jan", "en", "It was 5 p.m. on Jan. 5th. Cold.", ["It was 5 p.m. on Jan. 5th.", "Cold."]),
    ("quote-said", "en", '"Stop. Now." he said. She left.', ['"Stop. Now." he said.', "She left."]),
    ("quote-then", "en", 'He said "Stop." Then he left.', ['He said "Stop."', "Then he left."]),
    ("ellipsis", "en", "Wait... What happened?", ["Wait...", "What happened?"]),
    ("ellipsis-char", "en", "Wait… what happened?", ["Wait… what happened?"]),
    ("ellipsis-alone", "en", "Hello. ... World.", ["Hello. ...", "World."]),
    ("ellipsis-first", "en", "... Hello there. Bye.", ["... Hello there.", "Bye."]),
    ("dash-alone", "en", "Hi.\n—\nThere.", ["Hi.", "— There."]),
    ("bangs-alone", "en", "Hello. !!! Bye.", ["Hello. !!!", "Bye."]),
    ("separator-paragraph", "en", "The end.\n\n***\n\nNext part.", ["The end. ***", "Next part."]),
    ("question-exclaim", "en", "Really?! Yes! No?", ["Really?!", "Yes!", "No?"]),
    (
        "url-email",
        "en",
        "See https://example.com/path.html for details. Write to jane.doe@example.org today.",
        ["See https://example.com/path.html for details.", "Write to jane.doe@example.org today."],
    ),
    ("www", "en", "Go to www.example.com. It is good.", ["Go to www.example.com.", "It is good."]),
    (
        "numbered-list",
        "en",
        "1. Mix the flour.\n2. Add water.\n3. Bake.",
        ["1. Mix the flour.", "2. Add water.", "3. Bake."],
    ),
    ("dashed-list", "en", "Shopping:\n- eggs\n- milk", ["Shopping:", "- eggs", "- milk"]),
    (
        "newline-in-paragraph",
        "en",
        "This line\ngoes on here.   And   this\tone.",
        ["This line goes on here.", "And this one."],
    ),
    (
        "blank-line-ends",
        "en",
        "A heading\n\nThe body starts here\n  \n\nand a new paragraph",
        ["A heading", "The body starts here", "and a new paragraph"],
    ),
    ("crlf", "en", "One.\r\nTwo\r\n\r\nThree", ["One.", "Two", "Three"]),
    ("nbsp-ideographic-space", "en", "Hello\u00a0there.\u3000Bye.", ["Hello there.", "Bye."]),
    (
        "japanese",
        "ja",
        "今日は晴れです。明日は雨でしょう！本当ですか？",
        ["今日は晴れです。", "明日は雨でしょう！", "本当ですか？"],
    ),
    ("japanese-quote", "ja", "「こんにちは。」と彼は言った。", ["「こんにちは。」", "と彼は言った。"]),
    ("chinese", "zh", "我爱北京。你呢？太好了！", ["我爱北京。", "你呢？", "太好了！"]),
    ("chinese-tw", "zh-TW", "我愛台北。你呢？", ["我愛台北。", "你呢？"]),
    ("russian", "ru", "Привет, мир. Как дела? Всё хорошо!", ["Привет, мир.", "Как дела?", "Всё хорошо!"]),
    (
        "hindi",
        "hi",
        "मैं घर जा रहा हूँ। तुम कहाँ हो? ठीक है।",
        ["मैं घर जा रहा हूँ।", "तुम कहाँ हो?", "ठीक है।"],
    ),
    ("arabic", "ar", "مرحبا بك. كيف حالك؟ أنا بخير!", ["مرحبا بك.", "كيف حالك؟", "أنا بخير!"]),
    (
        "german-ordinal",
        "de",
        "Am 3. Oktober ist Feiertag. Gut.",
        ["Am 3. Oktober ist Feiertag.", "Gut."],
    ),
    ("german-region", "de-DE", "Am 3. Oktober ist Feiertag. Gut.", ["Am 3. Oktober ist Feiertag.", "Gut."]),
    ("german-alpha3", "deu", "Am 3. Oktober ist Feiertag. Gut.", ["Am 3. Oktober ist Feiertag.", "Gut."]),
    ("greek-question", "el", "Γεια σου; Καλά.", ["Γεια σου;", "Καλά."]),
]


@pytest.mark.parametrize(("language", "text", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_hard_cases(language, text, expected):
    assert split_sentences(text, language) == expected


LONG_CASES = [
    # (id, text, max_chars, expected)
    (
        "semicolon",
        "The first part runs on; the second part follows it.",
        30,
        ["The first part runs on;", "the second part follows it."],
    ),
    (
        "last-clause-mark",
        "One, two, three, four, five six seven eight nine.",
        20,
        ["One, two, three,", "four, five six seven", "eight nine."],
    ),
    ("colon", "Here is the list: apples and pears.", 20, ["Here is the list:", "apples and pears."]),
    ("em-dash", "It was late—far too late for that.", 20, ["It was late—", "far too late for", "that."]),
    ("no-cut-in-number", "We counted 1,000,000 stars in all.", 16, ["We counted", "1,000,000 stars", "in all."]),
    ("no-cut-in-time", "It starts at 10:30 sharp today.", 16, ["It starts at", "10:30 sharp", "today."]),
    (
        "early-comma-ignored",
        "So, this sentence carries on for a while.",
        30,
        ["So, this sentence carries on", "for a while."],
    ),
    ("whitespace", "aaaa bbbb cccc dddd eeee", 10, ["aaaa bbbb", "cccc dddd", "eeee"]),
    ("hard", "x" * 25, 10, ["x" * 10, "x" * 10, "x" * 5]),
    (
        "hard-url",
        "See https://example.com/a/very/long/path now.",
        16,
        ["See", "https://example.", "com/a/very/long/", "path now."],
    ),
    (
        "cjk-comma",
        "こんにちは、" * 6,
        14,
        ["こんにちは、こんにちは、", "こんにちは、こんにちは、", "こんにちは、こんにちは、"],
    ),
    ("combining-kept", "e\u0301" * 6, 5, ["e\u0301e\u0301", "e\u0301e\u0301", "e\u0301e\u0301"]),
    ("conjunct-kept", "नमस्ते", 4, ["नम", "स्ते"]),
    ("exact-fit", "abcde fghij", 11, ["abcde fghij"]),
    ("limit-one", "ab c", 1, ["a", "b", "c"]),
]


@pytest.mark.parametrize(("text", "max_chars", "expected"), [c[1:] for c in LONG_CASES], ids=[c[0] for c in LONG_CASES])
def test_long_sentences_are_cut(text, max_chars, expected):
    got = split_sentences(text, max_chars=max_chars)
    assert got == expected
    assert all(len(piece) <= max_chars for piece in got)


def test_default_limit_is_400():
    words = " ".join(["word"] * 200)  # 999 characters, no punctuation
    pieces = split_sentences(words)
    assert len(pieces) == 3
    assert all(len(p) <= 400 for p in pieces)
    assert " ".join(pieces) == words


def test_wordless_piece_from_a_cut_stays_when_it_cannot_fit():
    text = "ok " + "!" * 12
    assert split_sentences(text, max_chars=10) == ["ok", "!" * 10, "!!"]


@pytest.mark.parametrize("text", ["", "   ", "\n\n\t", "\u3000"])
def test_empty_text(text):
    with pytest.raises(UsageError, match="text is empty") as err:
        split_sentences(text)
    assert err.value.hint == "give the words to speak"


@pytest.mark.parametrize("text", ["...", "— — —", "?!", "***\n\n***"])
def test_text_without_words(text):
    with pytest.raises(UsageError, match="no letter or digit"):
        split_sentences(text)


@pytest.mark.parametrize("max_chars", [0, -5, 2.5, True, "400"])
def test_bad_max_chars(max_chars):
    with pytest.raises(UsageError, match="max_chars"):
        split_sentences("Hello.", max_chars=max_chars)


@pytest.mark.parametrize(
    ("language", "code"),
    [
        ("en", "en"),
        ("EN", "en"),
        (" en-US ", "en"),
        ("en_GB", "en"),
        ("pt-BR", "pt"),
        ("zh-Hant-TW", "zh"),
        ("sr-Latn", "sr"),
        ("eng", "en"),
        ("ger", "de"),
        ("jpn", "ja"),
        ("yue", "yue"),  # a three-letter code sentencex may not know goes to it as written
        ("ast", "ast"),
    ],
)
def test_language_codes(language, code):
    assert check_language(language) == code


@pytest.mark.parametrize(
    "language", ["", "e", "xx", "qq-US", "english", "klingon", "en-", "en--us", "12", "en us", None]
)
def test_unknown_language(language):
    with pytest.raises(UsageError, match="unknown language code") as err:
        split_sentences("Hello.", language)
    assert "ISO 639" in err.value.hint


def test_language_changes_the_rules():
    text = "M. Dupont est là. Il attend."
    assert split_sentences(text, "fr") == ["M.", "Dupont est là.", "Il attend."]
    german = "Er kam am 3. Mai zurück. Gut."
    assert split_sentences(german, "de") == ["Er kam am 3. Mai zurück.", "Gut."]
    assert split_sentences(german, "bar") == ["Er kam am 3. Mai zurück.", "Gut."]  # Bavarian: sentencex uses German
    assert split_sentences(german, "en") == ["Er kam am 3.", "Mai zurück.", "Gut."]


def _non_space(text: str) -> str:
    return "".join(c for c in text if not c.isspace())


_ALPHABET = st.sampled_from(
    list("aZ09 .,;:!?—–-'\"()…$%@/\n")
    + ["\n\n", "\t", "\r\n", "\u00a0", "\u3000", "\u2028", "Dr.", "e.g.", "3.50", "U.S.A.", "http://x.y/z"]
    + list("。、？！「」日本語")
    + list("।नमस्ते्ि")
    + list("؟مرحبا")
    + list("Привет")
    + ["e\u0301", "\u200d", "\U0001f600"]
)
_TEXT = st.lists(_ALPHABET, max_size=80).map("".join)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    text=_TEXT,
    language=st.sampled_from(["en", "ja", "hi", "ar", "ru", "de", "fr", "zh"]),
    max_chars=st.integers(min_value=1, max_value=60),
)
def test_property_nothing_lost_and_nothing_too_long(text, language, max_chars):
    assume(any(c.isalnum() for c in text))
    pieces = split_sentences(text, language, max_chars=max_chars)
    assert _non_space("".join(pieces)) == _non_space(text)
    for piece in pieces:
        assert piece
        assert len(piece) <= max_chars
        assert piece == " ".join(piece.split())  # stripped, single spaces


@settings(max_examples=150, deadline=None)
@given(text=_TEXT)
def test_property_wordless_pieces_only_when_forced(text):
    """With a roomy limit, every piece has a letter or a digit."""
    assume(any(c.isalnum() for c in text))
    pieces = split_sentences(text, max_chars=1000)
    assert all(any(c.isalnum() for c in p) for p in pieces)


def test_a_failing_segmenter_keeps_the_paragraph(monkeypatch):
    import ccsm_core.sentences as sentences

    class PanicLike(BaseException):  # how pyo3 reports a Rust panic
        pass

    def panics(language, text):
        raise PanicLike("boom")

    monkeypatch.setattr(sentences, "segment", panics)
    assert split_sentences("One. Two.\n\nThree.") == ["One. Two.", "Three."]
    monkeypatch.setattr(sentences, "segment", lambda language, text: ["lost"])
    assert split_sentences("One. Two.") == ["One. Two."]

    def interrupted(language, text):
        raise KeyboardInterrupt

    monkeypatch.setattr(sentences, "segment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        split_sentences("One.")
