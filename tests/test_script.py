"""ccsm_core.script: dialogue scripts for `ccsm dialogue`."""

from __future__ import annotations

import io
import sys

import pytest

from ccsm_core.errors import FormatError, UsageError
from ccsm_core.script import MAX_SCRIPT_BYTES, ScriptTurn, parse_script, read_script

SCRIPT = """\
# a chat
[ann] Hi! How are you?
[1] Fine, thanks.
    And you?

[ ann ]   Great.
# the end
"""


def test_parse():
    assert parse_script(SCRIPT) == [
        ScriptTurn(line=2, tag="ann", speaker=None, voice="ann", text="Hi! How are you?"),
        ScriptTurn(line=3, tag="1", speaker=1, voice=None, text="Fine, thanks. And you?"),
        ScriptTurn(line=6, tag="ann", speaker=None, voice="ann", text="Great."),
    ]


@pytest.mark.parametrize(
    ("tag", "speaker", "voice"),
    [
        ("0", 0, None),
        ("007", 7, None),
        ("1000000", 1_000_000, None),
        ("Ann", None, "Ann"),
        ("voice-2_b.v1", None, "voice-2_b.v1"),
        ("a" * 64, None, "a" * 64),
        ("1a", None, "1a"),
    ],
)
def test_tags(tag, speaker, voice):
    (turn,) = parse_script(f"[{tag}] Hello.")
    assert (turn.tag, turn.speaker, turn.voice, turn.text) == (tag, speaker, voice, "Hello.")


def test_continuation_lines_and_the_tag_alone():
    text = "[ann]\n  Hello\n\n# skipped\n  there.\n[bob]No space after the tag."
    assert parse_script(text) == [
        ScriptTurn(1, "ann", None, "ann", "Hello there."),
        ScriptTurn(6, "bob", None, "bob", "No space after the tag."),
    ]


def test_brackets_later_in_the_text_are_text():
    (turn,) = parse_script("[ann] I said [quietly] hi] there")
    assert turn.text == "I said [quietly] hi] there"


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_numbers_with_any_newline(newline):
    text = newline.join(["# c", "", "[ann] a", "[bob] b"])
    assert [t.line for t in parse_script(text)] == [3, 4]


def test_bom_is_ignored():
    assert parse_script("\ufeff[ann] hi")[0].tag == "ann"


@pytest.mark.parametrize(
    ("text", "message", "hint"),
    [
        ("Hello\n[ann] hi", "script.txt line 1: text before the first [tag]", "write [name] or [0]"),
        ("\n\n[] hi", "script.txt line 3: empty tag []", "write [name] or [0]"),
        ("[  ] hi", "script.txt line 1: empty tag []", "write [name] or [0]"),
        ("[ann hi", "script.txt line 1: the tag '[ann hi' has no closing ]", "write [name] or [0]"),
        ("[ann lee] hi", "script.txt line 1: the tag [ann lee] is not a speaker id or voice name", "1-64 letters"),
        ("[ann/../x] hi", "the tag [ann/../x] is not a speaker id or voice name", "1-64 letters"),
        ("[.hidden] hi", "the tag [.hidden] is not a speaker id or voice name", "not starting with '.'"),
        ("[zoë] hi", "the tag [zoë] is not a speaker id or voice name", "1-64 letters"),
        ("[٣] hi", "the tag [٣] is not a speaker id or voice name", "1-64 letters"),
        ("[" + "a" * 65 + "] hi", "is not a speaker id or voice name", "1-64 letters"),
        ("[1000001] hi", "script.txt line 1: speaker id 1000001 is too large", "from 0 to 1,000,000"),
        ("[-1] hi", "script.txt line 1: speaker id -1 is negative", "from 0 to 1,000,000"),
        ("[ann] hi\n[bob]\n# nothing\n[ann] bye", "script.txt line 2: the turn [bob] has no text", "write the words"),
        ("[ann]", "script.txt line 1: the turn [ann] has no text", "write the words"),
        ("# only comments\n\n", "script.txt: the script has no turns", "write [name] or [0]"),
        ("", "script.txt: the script has no turns", "write [name] or [0]"),
    ],
)
def test_parse_errors(text, message, hint):
    with pytest.raises(FormatError) as err:
        parse_script(text, "script.txt")
    assert message in str(err.value)
    assert hint in err.value.hint


def test_error_one_line():
    with pytest.raises(FormatError) as err:
        parse_script("[ann] a\n\n[] b", "script.txt")
    assert err.value.one_line() == (
        "script.txt line 3: empty tag [] (hint: write [name] or [0] at the start of each turn, e.g. [ann] Hello.)"
    )


def test_default_source_name():
    with pytest.raises(FormatError, match=r"^script line 1: empty tag"):
        parse_script("[] x")


def test_read_script(tmp_path):
    path = tmp_path / "talk.txt"
    path.write_text(SCRIPT, encoding="utf-8")
    assert read_script(str(path)) == parse_script(SCRIPT)


def test_read_script_bom_and_crlf(tmp_path):
    path = tmp_path / "talk.txt"
    path.write_bytes(b"\xef\xbb\xbf[ann] Hi\r\n\r\n[1] Yo\r\n")
    assert [(t.line, t.tag, t.text) for t in read_script(str(path))] == [(1, "ann", "Hi"), (3, "1", "Yo")]


def test_read_script_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO("[ann] héllo\n".encode())))
    assert read_script("-") == [ScriptTurn(1, "ann", None, "ann", "héllo")]


def test_read_script_stdin_errors_name_stdin(monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b"[ann] a\n[] b\n")))
    with pytest.raises(FormatError, match=r"^stdin line 2: empty tag \[\]"):
        read_script("-")


def test_read_script_missing(tmp_path):
    path = tmp_path / "nope.txt"
    with pytest.raises(UsageError, match=r"nope\.txt: no such file") as err:
        read_script(str(path))
    assert err.value.hint == "check the script path"


def test_read_script_folder(tmp_path):
    with pytest.raises(UsageError, match="is a folder"):
        read_script(str(tmp_path))


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"[ann] hi\n[bob] caf\xe9\n", r"talk\.txt line 2: not UTF-8 text \(byte 18\)"),
        (b"\xef\xbb\xbf[ann] hi\n\xff\n", r"talk\.txt line 2: not UTF-8 text \(byte 12\)"),
        (b"\xff\xfe[\x00a\x00]\x00", r"talk\.txt line 1: not UTF-8 text \(byte 0\)"),  # UTF-16
    ],
)
def test_read_script_not_utf8(tmp_path, data, match):
    path = tmp_path / "talk.txt"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=match) as err:
        read_script(str(path))
    assert err.value.hint == "save the script as UTF-8"


@pytest.mark.parametrize("data", [b"", b"\xef\xbb\xbf", b"  \n\t\n"])
def test_read_script_empty(tmp_path, data):
    path = tmp_path / "talk.txt"
    path.write_bytes(data)
    with pytest.raises(FormatError, match=r"talk\.txt: the script is empty"):
        read_script(str(path))


def test_read_script_size_limit(tmp_path):
    line = b"[ann] " + b"a" * 1017 + b"\n"  # 1 KiB
    path = tmp_path / "big.txt"
    path.write_bytes(line * 1024)
    assert len(read_script(str(path))) == 1024  # exactly 1 MiB is fine
    path.write_bytes(line * 1024 + b"x")
    with pytest.raises(FormatError, match=r"big\.txt is larger than 1 MiB"):
        read_script(str(path))
    assert MAX_SCRIPT_BYTES == 1 << 20
