"""ccsm_core.timestamps: subtitle files and their atomic writing."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest

from ccsm_core.errors import UsageError
from ccsm_core.timestamps import Cue, to_json, to_srt, to_vtt, write_text_atomic

CUES = [
    Cue(1, 0.0, 1.5, "Hello there."),
    Cue(2, 1.5, 3.25, "How are you?", speaker=1),
    Cue(3, 3.25, 4.0, "Fine.", speaker=0, voice="ann"),
]


def test_srt():
    assert to_srt(CUES) == (
        "1\n00:00:00,000 --> 00:00:01,500\nHello there.\n"
        "\n"
        "2\n00:00:01,500 --> 00:00:03,250\nHow are you?\n"
        "\n"
        "3\n00:00:03,250 --> 00:00:04,000\nFine.\n"
    )


def test_vtt():
    assert to_vtt(CUES) == (
        "WEBVTT\n"
        "\n"
        "1\n00:00:00.000 --> 00:00:01.500\nHello there.\n"
        "\n"
        "2\n00:00:01.500 --> 00:00:03.250\n<v Speaker 1>How are you?\n"
        "\n"
        "3\n00:00:03.250 --> 00:00:04.000\n<v ann>Fine.\n"
    )


def test_json():
    assert to_json(CUES) == [
        {"index": 1, "start": 0.0, "end": 1.5, "text": "Hello there.", "speaker": None, "voice": None},
        {"index": 2, "start": 1.5, "end": 3.25, "text": "How are you?", "speaker": 1, "voice": None},
        {"index": 3, "start": 3.25, "end": 4.0, "text": "Fine.", "speaker": 0, "voice": "ann"},
    ]
    json.dumps(to_json(CUES))  # serialisable as is


def test_empty():
    assert to_srt([]) == ""
    assert to_vtt([]) == "WEBVTT\n"
    assert to_json([]) == []


def test_accepts_any_iterable():
    assert to_srt(iter(CUES)) == to_srt(CUES)
    assert to_json(c for c in CUES) == to_json(CUES)


@pytest.mark.parametrize(
    ("seconds", "srt", "vtt", "json_s"),
    [
        (0, "00:00:00,000", "00:00:00.000", 0.0),
        (1.0005, "00:00:01,001", "00:00:01.001", 1.001),  # half up, from the decimal as written
        (1.0004999, "00:00:01,000", "00:00:01.000", 1.0),
        (2.675, "00:00:02,675", "00:00:02.675", 2.675),
        (0.0005, "00:00:00,001", "00:00:00.001", 0.001),
        (59.9996, "00:01:00,000", "00:01:00.000", 60.0),  # the carry reaches the minutes
        (3599.9999, "01:00:00,000", "01:00:00.000", 3600.0),
        (3723.456, "01:02:03,456", "01:02:03.456", 3723.456),
        (36000 + 0.001, "10:00:00,001", "10:00:00.001", 36000.001),
        (100 * 3600 + 61.5, "100:01:01,500", "100:01:01.500", 360061.5),
        (1e-9, "00:00:00,000", "00:00:00.000", 0.0),
        (7, "00:00:07,000", "00:00:07.000", 7.0),  # an int is fine
    ],
)
def test_times(seconds, srt, vtt, json_s):
    cue = Cue(1, seconds, seconds, "x")
    assert to_srt([cue]).split("\n")[1] == f"{srt} --> {srt}"
    assert to_vtt([cue]).split("\n")[3] == f"{vtt} --> {vtt}"
    assert to_json([cue])[0]["start"] == json_s


def test_text_lines_and_arrows():
    cue = Cue(1, 0, 1, "  first line  \n\n\n second --> third \r\n x ---> y <-- z\n")
    assert to_srt([cue]) == "1\n00:00:00,000 --> 00:00:01,000\nfirst line\nsecond -> third\nx -> y <-- z\n"
    vtt = to_vtt([cue])
    assert vtt.endswith("first line\nsecond -&gt; third\nx -&gt; y &lt;-- z\n")
    assert vtt.count("-->") == 1  # only the timing line
    assert to_json([cue])[0]["text"] == cue.text  # JSON keeps the text as given


def test_text_that_looks_like_a_cue_does_not_break_srt():
    cue = Cue(1, 0, 1, "2\n00:00:01,000 --> 00:00:02,000\nfake")
    blocks = to_srt([cue, Cue(2, 1, 2, "real")]).split("\n\n")
    assert len(blocks) == 2
    assert "-->" not in blocks[0].split("\n", 2)[2]


def test_vtt_escapes_markup_and_names():
    cue = Cue(1, 0, 1, "a < b & c > d", voice="Tom & <Jerry>")
    assert to_vtt([cue]).endswith("<v Tom &amp; &lt;Jerry&gt;>a &lt; b &amp; c &gt; d\n")


def test_vtt_voice_wins_over_speaker_and_names_are_one_line():
    cue = Cue(1, 0, 1, "hi", speaker=3, voice="  the\nnarrator ")
    assert to_vtt([cue]).endswith("<v the narrator>hi\n")


def test_srt_ignores_speaker():
    assert to_srt([Cue(1, 0, 1, "hi", speaker=2, voice="bob")]).endswith("\nhi\n")


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"start": -0.1}, "start must be a finite number"),
        ({"end": -1}, "end must be a finite number"),
        ({"start": math.nan}, "start must be a finite number"),
        ({"end": math.inf}, "end must be a finite number"),
        ({"start": "1"}, "start must be a finite number"),
        ({"start": True}, "start must be a finite number"),
        ({"start": 2.0, "end": 1.0}, "after its end"),
        ({"index": 0}, "index must be an integer from 1"),
        ({"index": 1.0}, "index must be an integer from 1"),
        ({"text": ""}, "no text"),
        ({"text": " \n\t "}, "no text"),
        ({"speaker": -1}, "speaker must be an integer"),
        ({"speaker": "1"}, "speaker must be an integer"),
        ({"voice": ""}, "voice must be a non-empty name"),
    ],
)
def test_bad_cue(kwargs, match):
    fields = {"index": 1, "start": 0.0, "end": 1.0, "text": "hi"} | kwargs
    with pytest.raises(UsageError, match=match):
        Cue(**fields)


def test_cues_out_of_order():
    with pytest.raises(UsageError, match="starts at 0.5 s, before cue 1 at 1.0 s"):
        to_srt([Cue(1, 1.0, 2.0, "a"), Cue(2, 0.5, 3.0, "b")])
    with pytest.raises(UsageError, match="cue 1 comes after cue 2"):
        to_vtt([Cue(2, 0, 1, "a"), Cue(1, 1, 2, "b")])
    with pytest.raises(UsageError, match="cue 1 comes after cue 1"):
        to_json([Cue(1, 0, 1, "a"), Cue(1, 1, 2, "b")])
    with pytest.raises(UsageError, match="not a Cue"):
        to_srt([("1", 0, 1, "a")])


def test_overlap_and_gaps_are_allowed():
    cues = [Cue(1, 0, 2, "a"), Cue(2, 1, 3, "b"), Cue(5, 10, 10, "c")]
    assert to_srt(cues).count("-->") == 3


def _temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_write_text_atomic(tmp_path):
    target = tmp_path / "out.srt"
    write_text_atomic(target, to_srt(CUES))
    assert target.read_text(encoding="utf-8") == to_srt(CUES)
    write_text_atomic(str(target), "héllo\n日本\n")
    assert target.read_bytes() == "héllo\n日本\n".encode()  # UTF-8, newlines untouched
    assert _temp_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.srt"]


def test_write_text_atomic_permissions(tmp_path):
    target = tmp_path / "new.vtt"
    mask = os.umask(0o022)
    try:
        write_text_atomic(target, "x")
    finally:
        os.umask(mask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o644  # not mkstemp's 0600
    target.chmod(0o640)
    write_text_atomic(target, "y")
    assert stat.S_IMODE(target.stat().st_mode) == 0o640  # replacing keeps the file's mode


def test_write_text_atomic_missing_folder(tmp_path):
    target = tmp_path / "nope" / "out.srt"
    with pytest.raises(UsageError, match="cannot write .*out.srt: the folder .*nope does not exist"):
        write_text_atomic(target, "x")
    assert not (tmp_path / "nope").exists()


def test_write_text_atomic_onto_a_folder(tmp_path):
    (tmp_path / "taken").mkdir()
    with pytest.raises(UsageError, match="cannot write .*taken"):
        write_text_atomic(tmp_path / "taken", "x")
    assert _temp_files(tmp_path) == []


def test_write_text_atomic_parent_is_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UsageError, match="does not exist"):
        write_text_atomic(tmp_path / "file" / "out.srt", "x")


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can write anywhere")
def test_write_text_atomic_unwritable_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o500)
    try:
        with pytest.raises(UsageError, match="cannot write .*out.srt"):
            write_text_atomic(folder / "out.srt", "x")
    finally:
        folder.chmod(0o700)


def test_write_text_atomic_failure_leaves_old_file_and_no_temp(tmp_path, monkeypatch):
    target = tmp_path / "out.srt"
    target.write_text("old")

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(UsageError, match="cannot write .*out.srt: No space left on device"):
        write_text_atomic(target, "new")
    assert target.read_text() == "old"
    assert _temp_files(tmp_path) == []


def test_write_text_atomic_permission_denied(tmp_path, monkeypatch):
    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "open", denied)
    with pytest.raises(UsageError, match="cannot write .*out.srt: Permission denied") as err:
        write_text_atomic(tmp_path / "out.srt", "x")
    assert "folder you can write to" in err.value.hint


def test_numpy_numbers_become_plain():
    np = pytest.importorskip("numpy")
    cue = Cue(np.int64(1), np.float32(0.5), np.float64(1.25), "hi", speaker=np.int32(2))
    assert (type(cue.index), type(cue.start), type(cue.end), type(cue.speaker)) == (int, float, float, int)
    assert json.loads(json.dumps(to_json([cue]))) == [
        {"index": 1, "start": 0.5, "end": 1.25, "text": "hi", "speaker": 2, "voice": None}
    ]
    with pytest.raises(UsageError, match="start must be a finite number"):
        Cue(1, np.float64("nan"), 1.0, "x")
    with pytest.raises(UsageError, match="index must be an integer"):
        Cue(np.bool_(True), 0, 1, "x")
