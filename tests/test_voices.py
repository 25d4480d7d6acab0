"""Saved voices: the file format (round trip, every kind of damage), the store, `ccsm voice`."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import threading
import tracemalloc
import types
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ccsm_core.cli import cli
from ccsm_core.errors import FormatError, ModelError, UsageError
from ccsm_core.generator import GenerationSettings, Segment
from ccsm_core.voices import (
    FORMAT_VERSION,
    HUB_TRANSCRIPTS,
    SUFFIX,
    Voice,
    VoiceStore,
    VoiceTurn,
    check_name,
    codec_fingerprint,
    from_hub_prompts,
    hub_prompts,
    make_voice,
    read_voice,
    voice_bytes,
    write_voice,
)


@pytest.fixture(autouse=True)
def isolated(tmp_path, tmp_path_factory, monkeypatch):
    """Voices in tmp_path, the demo model in the session's cache, no real Hugging Face cache."""
    monkeypatch.setenv("CCSM_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "no-hf-cache"))
    monkeypatch.delenv("CCSM_MODEL", raising=False)


@pytest.fixture(scope="module")
def speech(tmp_path_factory):
    from ccsm_core.speech import load_speech

    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))
        return load_speech("demo")


def noise(seconds: float, seed: int = 0, rate: int = 24_000) -> np.ndarray:
    return (np.random.default_rng(seed).standard_normal(int(seconds * rate)) * 0.1).astype(np.float32)


def wav(path: Path, seconds: float = 0.3, seed: int = 0, rate: int = 24_000) -> Path:
    sf.write(path, noise(seconds, seed, rate), rate, format="WAV")
    return path


def invoke(cli_runner, *args, code: int = 0):
    res = cli_runner.invoke(cli, [str(a) for a in args])
    assert res.exit_code == code, res.output
    return res


def one_line_error(res) -> str:
    """The output of a failed command: exactly one `error: ... (hint: ...)` line, no traceback."""
    assert res.exit_code == 2, res.output
    assert not isinstance(res.exception, Exception) or isinstance(res.exception, SystemExit), res.exception
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], res.output
    assert "Traceback" not in res.output
    return lines[0]


def a_voice(name: str = "ann", seed: int = 0, turns: int = 2, frames: int = 5, ncb: int = 32) -> Voice:
    rng = np.random.default_rng(seed)
    made = tuple(
        VoiceTurn(f"turn {i} of {name}", rng.integers(0, 2048, (ncb, frames + i), dtype=np.int64)) for i in range(turns)
    )
    return Voice(name, 3, made, "0123456789abcdef", "demo", "2024-05-01T12:00:00Z")


# -- the type and the file format -------------------------------------------------------------


def test_round_trip(tmp_path):
    v = a_voice()
    path = tmp_path / f"ann{SUFFIX}"
    write_voice(v, path)
    back = read_voice(path)
    assert back == v
    for a, b in zip(back.turns, v.turns):
        assert a.codes.dtype == np.int64 and np.array_equal(a.codes, b.codes) and a.text == b.text
    assert back.frames() == 5 + 6 and back.seconds() == pytest.approx(11 / 12.5)
    segs = back.segments()
    assert all(isinstance(s, Segment) for s in segs)
    assert [s.speaker for s in segs] == [3, 3] and [s.text for s in segs] == ["turn 0 of ann", "turn 1 of ann"]
    assert np.array_equal(segs[1].codes, v.turns[1].codes) and segs[0].audio is None
    assert [s.speaker for s in back.segments(speaker=1)] == [1, 1]
    assert path.read_bytes().startswith(b"CCSMVOICE 1\n")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp file left


def test_codes_are_read_only_copies():
    codes = np.ones((32, 3), np.int32)
    turn = VoiceTurn("hi", codes)
    codes[0, 0] = 7
    assert turn.codes[0, 0] == 1 and turn.codes.dtype == np.int64
    with pytest.raises(ValueError):
        turn.codes[0, 0] = 2


@pytest.mark.parametrize(
    "kwargs",
    [
        {"name": "../x"},
        {"speaker": -1},
        {"speaker": True},
        {"turns": ()},
        {"codec": ""},
        {"turns": (VoiceTurn("a", np.zeros((32, 2), np.int64)), VoiceTurn("b", np.zeros((8, 2), np.int64)))},
    ],
)
def test_invalid_voices_are_refused(kwargs):
    with pytest.raises(UsageError):
        dataclasses.replace(a_voice(), **kwargs)


@pytest.mark.parametrize("codes", [np.full((32, 2), 2051), np.full((32, 2), -1), np.zeros((32, 0)), np.zeros(5)])
def test_invalid_turns_are_refused(codes):
    with pytest.raises(UsageError):
        VoiceTurn("hi", codes.astype(np.int64))
    with pytest.raises(UsageError):
        VoiceTurn("  ", np.zeros((32, 2), np.int64))


def test_check_name():
    for good in ("ann", "Ann-2", "a.b_c", "x" * 64):
        assert check_name(good) == good
    for bad in ("", ".hidden", "a/b", "a b", "x" * 65, "é", None, "..", "a\\b"):
        with pytest.raises(UsageError):
            check_name(bad)


# -- made with the model ----------------------------------------------------------------------


def test_make_voice_encodes_with_the_models_mimi(speech):
    a, b = noise(0.3, 1), noise(0.5, 2)
    v = make_voice(speech, "ann", 0, [("Hi, I'm Ann.", a), ("Again.", b)])
    assert np.array_equal(v.turns[0].codes, speech.mimi.encode(a))
    assert np.array_equal(v.turns[1].codes, speech.mimi.encode(b))
    assert v.codec == codec_fingerprint(speech.mimi) and v.model == "demo" and v.created.endswith("Z")
    v.check_codec(speech.mimi)
    # codes in place of audio are taken as they are
    codes = speech.mimi.encode(a)
    assert np.array_equal(make_voice(speech, "c", 0, [("x", codes)]).turns[0].codes, codes)
    with pytest.raises(UsageError):
        make_voice(speech, "c", 0, [("x", codes[:8])])


def test_a_voice_is_usable_context(speech):
    v = make_voice(speech, "ann", 0, [("Hi.", noise(0.2))])
    settings = GenerationSettings(max_audio_ms=160, seed=1)
    frames = list(speech.frames("Hello.", 0, context=v.segments(), settings=settings))
    again = list(speech.frames("Hello.", 0, context=[Segment(0, "Hi.", audio=noise(0.2))], settings=settings))
    assert frames and np.array_equal(np.stack(frames), np.stack(again))


def test_wrong_codec_is_a_model_error(speech):
    v = make_voice(speech, "ann", 0, [("Hi.", noise(0.2))])
    v.check_codec(None)  # cannot check: passes
    other = dataclasses.replace(v, codec="ffffffffffffffff")
    with pytest.raises(ModelError) as e:
        other.check_codec(speech.mimi)
    assert "another Mimi codec" in str(e.value) and "--force" in e.value.hint and "\n" not in e.value.one_line()
    fewer = types.SimpleNamespace(num_codebooks=8, cardinality=2048, quantizer=speech.mimi.quantizer)
    with pytest.raises(ModelError, match="codebooks"):
        v.check_codec(fewer)


def test_fingerprint_is_stable_across_precision_and_cached():
    rng = np.random.default_rng(0)
    books = [rng.standard_normal((16, 4)).astype(np.float32) for _ in range(3)]

    def mimi(bs):
        return types.SimpleNamespace(num_codebooks=3, cardinality=16, quantizer=types.SimpleNamespace(codebooks=bs))

    f32 = mimi(books)
    f16 = mimi([b.astype(np.float16).astype(np.float32) for b in books])
    assert codec_fingerprint(f32) == codec_fingerprint(f16)
    assert len(codec_fingerprint(f32)) == 16
    changed = mimi([books[0] + 1, *books[1:]])
    assert codec_fingerprint(changed) != codec_fingerprint(f32)
    first = codec_fingerprint(f32)
    f32.quantizer.codebooks = []  # computed once per object
    assert codec_fingerprint(f32) == first


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_add_list_show_remove_export_import(cli_runner, tmp_path):
    a, b = wav(tmp_path / "a.wav", 0.3, 1), wav(tmp_path / "b.wav", 0.4, 2, rate=16_000)
    res = invoke(
        cli_runner, "voice", "add", "ann", "--speaker", 0, "--text", "Hi, I'm Ann.", "--audio", a,
        "--text", "Bye.", "--audio", b, "--model", "demo",
    )  # fmt: skip
    store = VoiceStore()
    assert store.root == tmp_path / "data" / "voices"
    assert f"voice ann: 2 turns, 0.7 s, saved to {store.path('ann')}" in res.output
    v = store.get("ann")
    assert [t.text for t in v.turns] == ["Hi, I'm Ann.", "Bye."] and v.speaker == 0 and v.model == "demo"

    out = invoke(cli_runner, "voice", "list").output.splitlines()
    assert out[0].split() == ["NAME", "SPEAKER", "TURNS", "SECONDS", "MODEL", "CREATED"]
    assert out[1].split()[:5] == ["ann", "0", "2", "0.7", "demo"]
    records = json.loads(invoke(cli_runner, "voice", "list", "--json").output)
    assert records[0]["name"] == "ann" and records[0]["codec"] == v.codec and len(records[0]["turns"]) == 2

    shown = invoke(cli_runner, "voice", "show", "ann").output
    assert v.codec in shown and "Hi, I'm Ann." in shown and "Bye." in shown
    record = json.loads(invoke(cli_runner, "voice", "show", "ann", "--json").output)
    assert record["turns"][0] == {"text": "Hi, I'm Ann.", "frames": v.turns[0].frames(), "seconds": 0.32}

    exported = tmp_path / "shared.ccsmvoice"
    invoke(cli_runner, "voice", "export", "ann", "-o", exported)
    assert exported.read_bytes() == store.path("ann").read_bytes()
    invoke(cli_runner, "voice", "import", exported, "--name", "bob")
    bob = store.get("bob")
    assert bob.name == "bob" and bob.turns == v.turns and bob.codec == v.codec
    assert store.names() == ["ann", "bob"]

    invoke(cli_runner, "voice", "remove", "ann")
    assert store.names() == ["bob"]
    err = one_line_error(invoke(cli_runner, "voice", "show", "ann", code=2))
    assert "no voice named ann" in err
    err = one_line_error(invoke(cli_runner, "voice", "show", "bobb", code=2))
    assert "did you mean bob" in err
    one_line_error(invoke(cli_runner, "voice", "remove", "ann", code=2))
    invoke(cli_runner, "voice", "import", exported)  # its own name again
    assert store.names() == ["ann", "bob"]


def test_cli_add_codes_file(cli_runner, tmp_path, speech):
    codes = speech.mimi.encode(noise(0.3))
    np.save(tmp_path / "c.npy", codes.T)  # [T, 32], as ccsm encode writes
    invoke(cli_runner, "voice", "add", "c", "-s", 4, "--text", "hi", "--audio", tmp_path / "c.npy", "-m", "demo")
    v = VoiceStore().get("c")
    assert v.speaker == 4 and np.array_equal(v.turns[0].codes, codes)


def test_cli_add_duplicate_needs_force(cli_runner, tmp_path):
    a, b = wav(tmp_path / "a.wav", 0.2, 1), wav(tmp_path / "b.wav", 0.4, 2)
    invoke(cli_runner, "voice", "add", "ann", "-s", 0, "--text", "one", "--audio", a, "-m", "demo")
    err = one_line_error(
        invoke(cli_runner, "voice", "add", "ann", "-s", 1, "--text", "two", "--audio", b, "-m", "demo", code=2)
    )
    assert "voice ann exists" in err and "--force" in err
    assert VoiceStore().get("ann").turns[0].text == "one"
    invoke(cli_runner, "voice", "add", "ann", "-s", 1, "--text", "two", "--audio", b, "-m", "demo", "--force")
    v = VoiceStore().get("ann")
    assert v.turns[0].text == "two" and v.speaker == 1
    exported = tmp_path / "x.ccsmvoice"
    invoke(cli_runner, "voice", "export", "ann", "-o", exported)
    assert "exists" in one_line_error(invoke(cli_runner, "voice", "import", exported, code=2))
    invoke(cli_runner, "voice", "import", exported, "--force")


@pytest.mark.parametrize(
    "args",
    [
        ["--text", "a", "--text", "b", "--audio", "{a}"],  # counts differ
        ["--audio", "{a}"],  # no text
        ["--text", "a", "--audio", "{missing}"],
    ],
)
def test_cli_add_bad_turns(cli_runner, tmp_path, args):
    a = wav(tmp_path / "a.wav")
    args = [x.format(a=a, missing=tmp_path / "missing.wav") for x in args]
    one_line_error(invoke(cli_runner, "voice", "add", "ann", "-s", 0, *args, "-m", "demo", code=2))
    assert VoiceStore().names() == []


def test_cli_add_bad_name_and_missing_speaker(cli_runner, tmp_path):
    a = wav(tmp_path / "a.wav")
    err = one_line_error(invoke(cli_runner, "voice", "add", "../up", "-s", 0, "--text", "a", "--audio", a, code=2))
    assert "cannot name a voice" in err
    err = one_line_error(invoke(cli_runner, "voice", "add", "ann", "--text", "a", "--audio", a, code=2))
    assert "--speaker" in err


def test_cli_list_empty(cli_runner):
    res = invoke(cli_runner, "voice", "list")
    assert "no voices saved" in res.output
    assert json.loads(invoke(cli_runner, "voice", "list", "--json").output) == []


# -- damaged files ----------------------------------------------------------------------------


def split(data: bytes) -> tuple[bytes, dict, bytes]:
    magic, header, payload = data.split(b"\n", 2)
    return magic + b"\n", json.loads(header), payload


def join(magic: bytes, header: dict, payload: bytes) -> bytes:
    return magic + json.dumps(header).encode() + b"\n" + payload


def with_payload(header: dict, payload: bytes) -> dict:
    return {**header, "payload_bytes": len(payload), "payload_sha256": hashlib.sha256(payload).hexdigest()}


def flip_payload(data: bytes) -> bytes:
    b = bytearray(data)
    b[-3] ^= 0x01
    return bytes(b)


def huge_frames(data: bytes) -> bytes:
    magic, head, payload = split(data)
    head["turns"][0]["frames"] = 10**9
    return join(magic, head, payload)


def huge_consistent(data: bytes) -> bytes:
    """A header whose sizes agree with each other, claiming far more than the file holds."""
    magic, head, payload = split(data)
    head["turns"] = [{"text": "x", "frames": 20_000}] * 1000
    head["num_codebooks"] = 64
    head["payload_bytes"] = 2 * 64 * 20_000 * 1000
    return join(magic, head, payload)


def big_code(data: bytes) -> bytes:
    magic, head, payload = split(data)
    codes = np.frombuffer(payload, "<u2").copy()
    codes[7] = 2051
    payload = codes.tobytes()
    return join(magic, with_payload(head, payload), payload)


def edit(**fields):
    def go(data: bytes) -> bytes:
        magic, head, payload = split(data)
        return join(magic, {**head, **fields}, payload)

    return go


def edit_turn(**fields):
    def go(data: bytes) -> bytes:
        magic, head, payload = split(data)
        head["turns"][0] = {**head["turns"][0], **fields}
        return join(magic, head, payload)

    return go


DAMAGE = {
    "flipped payload byte": (flip_payload, "checksum"),
    "truncated payload": (lambda d: d[:-10], "truncated"),
    "truncated header": (lambda d: d[:40], "truncated"),
    "empty file": (lambda d: b"", "magic"),
    "bad magic": (lambda d: b"RIFF" + d[4:], "magic"),
    "future version": (lambda d: d.replace(b"CCSMVOICE 1\n", b"CCSMVOICE 7\n", 1), "newer ccsm"),
    "version zero": (lambda d: d.replace(b"CCSMVOICE 1\n", b"CCSMVOICE 0\n", 1), "version 0"),
    "garbled version": (lambda d: d.replace(b"CCSMVOICE 1\n", b"CCSMVOICE x\n", 1), "malformed"),
    "10^9 frames": (huge_frames, "turns[0].frames"),
    "sizes beyond the file": (huge_consistent, "truncated"),
    "code 2051": (big_code, "2051"),
    "non-JSON header": (lambda d: d.replace(b'{"name"', b'{name"', 1), "not JSON"),
    "non-UTF-8 header": (lambda d: d.replace(b'"demo"', b'"\xff\xfe"', 1), "not JSON"),
    "header is a list": (lambda d: join(split(d)[0], [1, 2], split(d)[2]), "JSON object"),
    "header over 1 MiB": (lambda d: b"CCSMVOICE 1\n" + b"x" * (1 << 20) + b"\n", "longer than"),
    "trailing bytes": (lambda d: d + b"extra", "after its payload"),
    "speaker a string": (edit(speaker="0"), "speaker"),
    "speaker a bool": (edit(speaker=True), "speaker"),
    "speaker too big": (edit(speaker=10**7), "speaker"),
    "negative codebooks": (edit(num_codebooks=-32), "num_codebooks"),
    "65 codebooks": (edit(num_codebooks=65), "num_codebooks"),
    "float frames": (edit_turn(frames=4.0), "frames"),
    "missing frames": (edit_turn(frames=None), "frames"),
    "zero frames": (edit_turn(frames=0), "frames"),
    "empty text": (edit_turn(text=" "), "no text"),
    "text a number": (edit_turn(text=5), "no text"),
    "no turns": (edit(turns=[]), "0 turns"),
    "turns not a list": (edit(turns="x"), "turns"),
    "bad name": (edit(name="../etc"), "name"),
    "wrong dtype": (edit(dtype="int64"), "dtype"),
    "payload size disagrees": (edit(payload_bytes=10), "payload bytes"),
    "bad sha": (edit(payload_sha256="xyz"), "payload_sha256"),
    "huge int": (lambda d: d.replace(b'"speaker":3', b'"speaker":' + b"9" * 5000, 1), "not JSON"),
    "model null": (edit(model=None), "model"),
    "lone surrogate": (lambda d: d.replace(b"turn 0 of ann", b"turn \\ud800", 1), "not valid Unicode"),
}


@pytest.fixture
def good_bytes() -> bytes:
    data = voice_bytes(a_voice(turns=2, frames=4))
    assert b'"speaker":3' in data
    return data


@pytest.mark.parametrize("case", sorted(DAMAGE))
def test_damaged_file_is_one_clean_error(case, good_bytes, tmp_path, cli_runner):
    damage, cause = DAMAGE[case]
    path = tmp_path / f"damaged{SUFFIX}"
    path.write_bytes(damage(good_bytes))
    tracemalloc.start()
    try:
        with pytest.raises(FormatError) as e:
            read_voice(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"reading allocated {peak} bytes"
    assert str(path) in str(e.value) and cause in str(e.value) and e.value.hint
    assert "\n" not in e.value.one_line()

    err = one_line_error(invoke(cli_runner, "voice", "import", path, code=2))
    assert cause in err
    assert VoiceStore().names() == []
    # in the store: show is a clean error, list shows the file with its error
    store = VoiceStore()
    store.root.mkdir(parents=True, exist_ok=True)
    (store.root / f"bad{SUFFIX}").write_bytes(damage(good_bytes))
    store.add(a_voice("good"))
    one_line_error(invoke(cli_runner, "voice", "show", "bad", code=2))
    out = invoke(cli_runner, "voice", "list").output
    assert "good" in out and "bad" in out and "unreadable" in out and cause in out
    records = json.loads(invoke(cli_runner, "voice", "list", "--json").output)
    assert [r.get("error") is None for r in records] == [False, True]
    with pytest.warns(UserWarning, match="voice bad cannot be read"):
        assert [v.name for v in store.list()] == ["good"]
    invoke(cli_runner, "voice", "remove", "bad")  # a damaged voice can be removed


def test_deeply_nested_header(tmp_path):
    path = tmp_path / f"deep{SUFFIX}"
    path.write_bytes(b"CCSMVOICE 1\n" + b"[" * 200_000 + b"\n")
    with pytest.raises(FormatError, match="not JSON"):
        read_voice(path)


def test_unknown_header_fields_are_ignored(good_bytes, tmp_path):
    magic, head, payload = split(good_bytes)
    path = tmp_path / f"x{SUFFIX}"
    path.write_bytes(join(magic, {**head, "future_field": {"a": 1}}, payload))
    assert read_voice(path) == a_voice(turns=2, frames=4)
    assert FORMAT_VERSION == 1


def test_missing_file_and_folder(tmp_path, cli_runner):
    with pytest.raises(UsageError, match="does not exist"):
        read_voice(tmp_path / "none.ccsmvoice")
    one_line_error(invoke(cli_runner, "voice", "import", tmp_path / "none.ccsmvoice", code=2))
    with pytest.raises(UsageError, match="folder"):
        read_voice(tmp_path)


# -- concurrency ------------------------------------------------------------------------------


def run_together(n: int, work) -> list:
    barrier = threading.Barrier(n)
    results: list = [None] * n

    def one(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(i)
        except Exception as e:  # collected, checked by the test
            results[i] = e

    threads = [threading.Thread(target=one, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def test_concurrent_writers_leave_one_whole_voice(tmp_path):
    voices = [a_voice("same", seed=i, turns=1 + i % 3, frames=50 + 40 * i) for i in range(8)]
    path = tmp_path / f"same{SUFFIX}"
    for _ in range(3):
        assert run_together(8, lambda i: write_voice(voices[i], path)) == [None] * 8
        assert read_voice(path) in voices
    store = VoiceStore()
    for _ in range(3):
        results = run_together(8, lambda i: store.add(voices[i], replace=True))
        assert all(r == store.path("same") for r in results)
        assert store.get("same") in voices
    assert store.names() == ["same"]
    assert not [p for p in store.root.iterdir() if p.name != f"same{SUFFIX}"]  # no temp files left


def test_concurrent_adds_without_replace_one_wins(tmp_path):
    voices = [a_voice("race", seed=i, frames=30 + i) for i in range(8)]
    store = VoiceStore()
    results = run_together(8, lambda i: store.add(voices[i]))
    won = [i for i, r in enumerate(results) if isinstance(r, Path)]
    lost = [r for r in results if not isinstance(r, Path)]
    assert len(won) == 1 and len(lost) == 7
    assert all(isinstance(r, UsageError) and "voice race exists" in str(r) for r in lost)
    assert store.get("race") == voices[won[0]]
    assert sorted(os.listdir(store.root)) == [f"race{SUFFIX}"]


# -- the store --------------------------------------------------------------------------------


def test_store_root_and_names(tmp_path, monkeypatch):
    assert VoiceStore().root == tmp_path / "data" / "voices"
    assert VoiceStore(tmp_path / "elsewhere").root == tmp_path / "elsewhere"
    monkeypatch.delenv("CCSM_DATA_DIR")
    import platformdirs

    assert VoiceStore().root == platformdirs.user_data_path("ccsm") / "voices"
    store = VoiceStore(tmp_path / "s")
    assert store.names() == []
    store.add(a_voice("b"))
    store.add(a_voice("a"))
    (store.root / ".a.ccsmvoice.123.tmp").write_bytes(b"partial")
    (store.root / "notes.txt").write_text("x")
    assert store.names() == ["a", "b"]
    with pytest.raises(UsageError):
        store.path("../x")


def test_store_get_renames_to_its_file(tmp_path):
    store = VoiceStore()
    store.add(a_voice("ann"))
    os.replace(store.path("ann"), store.path("anne"))
    assert store.get("anne").name == "anne"


def test_export_to_a_folder(tmp_path):
    store = VoiceStore()
    store.add(a_voice("ann"))
    dest = tmp_path / "out"
    dest.mkdir()
    assert store.export("ann", dest) == dest / f"ann{SUFFIX}"
    assert read_voice(dest / f"ann{SUFFIX}") == a_voice("ann")


# -- the prompts of sesame/csm-1b -------------------------------------------------------------


def fake_hub(root: Path, extra: dict[str, str | None] | None = None) -> Path:
    """A Hugging Face cache holding sesame/csm-1b's prompts, in the hub's layout."""
    repo = root / "models--sesame--csm-1b"
    snap = repo / "snapshots" / "0123abcd"
    (snap / "prompts").mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    blobs = repo / "blobs"
    blobs.mkdir()
    for i, stem in enumerate(["conversational_a", "conversational_b", *(extra or {})]):
        blob = wav(blobs / f"blob{i}", 0.2 + 0.1 * i, seed=i)
        link = snap / "prompts" / f"{stem}.wav"
        try:
            link.symlink_to(os.path.relpath(blob, link.parent))
        except OSError:  # no symlinks here: a copy will do
            link.write_bytes(blob.read_bytes())
        text = (extra or {}).get(stem)
        if text is not None:
            (snap / "prompts" / f"{stem}.txt").write_text(text)
    return root


def test_hub_prompts_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub(tmp_path / "hub", {"read_speech_a": "Some words.", "x": None})))
    found, skipped = hub_prompts()
    assert [(n, s) for n, s, _, _ in found] == [("conversational_a", 0), ("conversational_b", 1), ("read_speech_a", 0)]
    assert found[0][2] == HUB_TRANSCRIPTS["conversational_a"][1] and found[0][2].startswith("like revising for an")
    assert found[1][2].endswith("go punching question blocks around.")
    assert found[2][2] == "Some words." and found[2][3].is_file()
    assert [(p.name, why) for p, why in skipped] == [("x.wav", "no transcript")]
    assert from_hub_prompts() == found


def test_hub_cache_from_hf_home(tmp_path, monkeypatch):
    monkeypatch.delenv("HF_HUB_CACHE")
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    fake_hub(tmp_path / "hf" / "hub")
    assert [n for n, *_ in from_hub_prompts()] == ["conversational_a", "conversational_b"]


def test_cli_add_from_hub(cli_runner, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_CACHE", str(fake_hub(tmp_path / "hub", {"lonely": None})))
    res = invoke(cli_runner, "voice", "add", "--from-hub", "--model", "demo")
    assert "skipped lonely.wav: no transcript" in res.output
    assert "voice conversational_a: 1 turn, 0.2 s" in res.output and "voice conversational_b: 1 turn" in res.output
    store = VoiceStore()
    assert store.names() == ["conversational_a", "conversational_b"]
    b = store.get("conversational_b")
    assert b.speaker == 1 and b.turns[0].text == HUB_TRANSCRIPTS["conversational_b"][1]
    err = one_line_error(invoke(cli_runner, "voice", "add", "--from-hub", "--model", "demo", code=2))
    assert "voices conversational_a, conversational_b exist" in err and "--force" in err
    invoke(cli_runner, "voice", "add", "conversational_a", "--from-hub", "--model", "demo", "--force")
    err = one_line_error(invoke(cli_runner, "voice", "add", "nope", "--from-hub", "--model", "demo", code=2))
    assert "no prompt named nope" in err


def test_cli_add_from_hub_without_cache(cli_runner):
    err = one_line_error(invoke(cli_runner, "voice", "add", "--from-hub", "--model", "demo", code=2))
    assert "huggingface-cli download sesame/csm-1b --include 'prompts/*'" in err
