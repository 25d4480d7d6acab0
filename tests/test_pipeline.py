"""Long texts, voices and dialogues through `ccsm_core.pipeline` on the tiny fixture model.

The tiny model never ends a sentence by itself, so every sentence runs to its frame budget:
the tests set budgets with --max-audio-ms (no retries then) or test the retries directly.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ccsm_core.cli import cli
from ccsm_core.generator import GenerationSettings, Segment
from ccsm_core.pipeline import (
    Audio,
    Finished,
    Line,
    SentenceDone,
    SentenceStarted,
    SpeakOptions,
    sentence_budget,
)
from ccsm_core.speech import load_speech
from ccsm_core.voices import VoiceStore, make_voice

from .test_csm_parity import FIXTURE

SAMPLED = dict(temperature=0.9, topk=50)


@pytest.fixture(autouse=True)
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("CCSM_DATA_DIR", str(tmp_path / "data"))


@pytest.fixture(scope="module")
def ctx_wave():
    return sf.read(FIXTURE / "context.wav", dtype="float32")[0]


def fresh():
    return load_speech(str(FIXTURE), "numpy")


def make_ann(sp, ctx_wave, speaker=1):
    return make_voice(sp, "ann", speaker, [("A voice prompt.", ctx_wave), ("And one more.", ctx_wave[:12000])])


def run(events):
    evs = list(events)
    assert isinstance(evs[-1], Finished)
    return evs, evs[-1]


def invoke(cli_runner, *args, input=None):
    res = cli_runner.invoke(cli, [str(a) for a in args], input=input)
    assert res.exit_code == 0, res.output
    return res


def test_one_sentence_is_exactly_one_generation(cli_runner, tmp_path):
    text = "Hello from CSM."
    settings = GenerationSettings(max_audio_ms=800, seed=7, **SAMPLED)
    want = fresh().generator.generate(text, 0, (), settings)
    (tmp_path / "t.txt").write_text(text + "\n")
    common = ["--model", FIXTURE, "-b", "numpy", "--max-audio-ms", 800, "--seed", 7, "--temperature", 0.9]
    invoke(cli_runner, "run", text, *common, "--codes-out", tmp_path / "a.npy")
    invoke(cli_runner, "run", "--text-file", tmp_path / "t.txt", *common, "--codes-out", tmp_path / "b.npy")
    invoke(cli_runner, "run", "-", *common, "--codes-out", tmp_path / "c.npy", input=text)
    for name in "abc":
        np.testing.assert_array_equal(np.load(tmp_path / f"{name}.npy"), want)


def test_voice_gives_the_frames_of_the_same_context_turns(cli_runner, tmp_path, ctx_wave):
    sp = fresh()
    ann = make_ann(sp, ctx_wave)
    VoiceStore().add(ann)
    for i, turn in enumerate(ann.turns):
        np.save(tmp_path / f"ctx{i}.npy", turn.codes)
    common = ["Second turn, same voice.", "--model", FIXTURE, "-b", "numpy", "--max-audio-ms", 800, "--seed", 3]
    invoke(cli_runner, "run", *common, "--voice", "ann", "--codes-out", tmp_path / "v.npy")
    ctx = [a for i, t in enumerate(ann.turns) for a in ("--context", 1, t.text, tmp_path / f"ctx{i}.npy")]
    invoke(cli_runner, "run", *common, "-s", 1, *ctx, "--codes-out", tmp_path / "c.npy")
    v, c = np.load(tmp_path / "v.npy"), np.load(tmp_path / "c.npy")
    np.testing.assert_array_equal(v, c)
    # and the voice changed something: without it the frames differ
    invoke(cli_runner, "run", *common, "-s", 1, "--codes-out", tmp_path / "n.npy")
    assert not np.array_equal(np.load(tmp_path / "n.npy"), v)


def recorded_prompts(sp, monkeypatch):
    """Every prompt the generator builds, as joined ``tokens``."""
    seen: list[np.ndarray] = []
    original = sp.generator.prompt_chunks

    def spy(*a, **kw):
        chunks = original(*a, **kw)
        seen.append(np.concatenate([c[0] for c in chunks]))
        return chunks

    monkeypatch.setattr(sp.generator, "prompt_chunks", spy)
    return seen


def test_sentence_prompts_are_voice_turns_then_earlier_sentences(ctx_wave, monkeypatch):
    sp = fresh()
    ann = make_ann(sp, ctx_wave)
    seen = recorded_prompts(sp, monkeypatch)
    text = "First one. Second one! Third, and last?"
    settings = GenerationSettings(max_audio_ms=400, seed=1, **SAMPLED)
    evs, done = run(sp.say(text, voice=ann, settings=settings))
    sents = [e for e in evs if isinstance(e, SentenceDone)]
    assert [s.sentence.text for s in sents] == ["First one.", "Second one!", "Third, and last?"]
    assert [s.sentence.index for s in sents] == [0, 1, 2]
    gen = sp.generator
    for k, s in enumerate(sents):
        earlier = [Segment(1, p.sentence.text, codes=p.frames.T) for p in sents[:k]]
        want, _ = gen.prompt(s.sentence.text, 1, earlier, voice=ann.segments())
        np.testing.assert_array_equal(seen[k], want)
    # the output is the sentences with Mimi's silence between them, decoded by one stream
    pause = done.frames[5:9]
    np.testing.assert_array_equal(
        done.frames, np.concatenate([sents[0].frames, pause, sents[1].frames, pause, sents[2].frames])
    )
    one_shot = sp.mimi.decode(done.frames.T)
    np.testing.assert_allclose(done.audio, one_shot, atol=1e-5, rtol=0)
    # decoding each sentence on its own (a reset at every join) is not what the output holds
    reset = np.concatenate(
        [sp.mimi.decode(f.T) for f in (sents[0].frames, pause, sents[1].frames, pause, sents[2].frames)]
    )
    assert np.max(np.abs(reset - done.audio)) > 1e-3
    # the cues are where the sentences are
    times = [t for c in done.sentences for t in (c.start, c.end)]
    assert times == pytest.approx([0, 0.4, 0.72, 1.12, 1.44, 1.84])


def test_earlier_sentences_are_pruned_by_recency_voice_kept(tmp_path, ctx_wave, monkeypatch):
    # the same checkpoint with a 200-row backbone context: the fourth sentence no longer sees the first
    small = tmp_path / "small"
    shutil.copytree(FIXTURE, small)
    cfg = json.loads((small / "config.json").read_text())
    cfg["flavors"]["tiny-backbone"]["max_seq_len"] = 200
    (small / "config.json").write_text(json.dumps(cfg))
    sp = load_speech(str(small), "numpy")
    ann = make_voice(sp, "ann", 1, [("Hi.", ctx_wave[:24000])])
    seen = recorded_prompts(sp, monkeypatch)
    text = "One. Two. Three. Four. Five."
    settings = GenerationSettings(max_audio_ms=2400, seed=2, **SAMPLED)
    evs, _ = run(sp.say(text, voice=ann, settings=settings))
    sents = [e for e in evs if isinstance(e, SentenceDone)]
    gen = sp.generator
    dropped_any = False
    for k, s in enumerate(sents):
        earlier = [Segment(1, p.sentence.text, codes=p.frames.T) for p in sents[:k]]
        budget = 200 - 30 - 1  # rows: 30 frames per sentence (2.4 s), plus the next frame's row
        # as documented: the voice stays; the oldest earlier sentences go first
        kept = list(earlier)
        voice_rows = sum(len(gen.turn_rows(t)[0]) for t in ann.segments())
        while (
            kept
            and voice_rows + sum(len(gen.turn_rows(t)[0]) for t in kept) + len(gen.text_rows(1, s.sentence.text)[0])
            > budget
        ):
            kept.pop(0)
        want, _ = gen.prompt(s.sentence.text, 1, kept, voice=ann.segments())
        np.testing.assert_array_equal(seen[k], want)
        assert s.dropped == list(range(k - len(kept)))
        dropped_any |= bool(s.dropped)
    assert dropped_any


@pytest.mark.parametrize("sampling", [dict(temperature=0), SAMPLED], ids=["greedy", "sampled"])
def test_cached_voice_rows_give_the_uncached_frames(ctx_wave, sampling):
    sp = fresh()
    ann = make_ann(sp, ctx_wave)
    bob = make_voice(sp, "bob", 0, [("Another voice.", ctx_wave[::-1].copy())])
    settings = GenerationSettings(max_audio_ms=480, seed=5, **sampling)
    opts = SpeakOptions(split=False)
    uncached = run(fresh().say("Cached or not.", voice=ann, settings=settings, options=opts))[1].frames

    cache = sp.generator.prompt_cache
    first = run(sp.say("Cached or not.", voice=ann, settings=settings, options=opts))[1].frames
    assert cache.last.reused == cache.last.restored == 0
    again = run(sp.say("Cached or not.", voice=ann, settings=settings, options=opts))[1].frames
    assert cache.last.reused > 0  # the live cache held the whole prompt
    run(sp.say("Someone else.", voice=bob, settings=settings, options=opts))  # the live cache moves on
    restored = run(sp.say("Cached or not.", voice=ann, settings=settings, options=opts))[1].frames
    assert cache.last.restored == sum(len(sp.generator.turn_rows(t)[0]) for t in ann.segments())
    for got in (first, again, restored):
        np.testing.assert_array_equal(got, uncached)


def test_runaway_sentences_are_retried_with_the_next_seed():
    sp = fresh()
    settings = GenerationSettings(seed=10, **SAMPLED)
    evs, done = run(sp.say("Hi there.", settings=settings, options=SpeakOptions(retries=2)))
    (d,) = [e for e in evs if isinstance(e, SentenceDone)]
    assert len(d.frames) == sentence_budget("Hi there.") and not d.ended and not d.capped
    assert (d.attempts, d.seed, done.seed) == (3, 12, 10)
    want = fresh().generator.generate(
        "Hi there.", 0, (), GenerationSettings(seed=12, max_audio_ms=len(d.frames) * 80, **SAMPLED)
    )
    np.testing.assert_array_equal(d.frames, want)
    # greedy runs are not retried (the next seed would give the same frames)
    evs, _ = run(sp.say("Hi there.", settings=GenerationSettings(temperature=0), options=SpeakOptions(retries=2)))
    assert [e.attempts for e in evs if isinstance(e, SentenceDone)] == [1]


def test_stream_events_and_audio_equal_the_whole(ctx_wave):
    settings = GenerationSettings(max_audio_ms=240, temperature=0)
    text = "One. Two."
    whole = run(fresh().say(text, settings=settings))[1]
    evs, streamed = run(fresh().say(text, settings=settings, options=SpeakOptions(stream=True)))
    chunks = [e.samples for e in evs if isinstance(e, Audio)]
    assert [len(c) // 1920 for c in chunks] == [1, 1, 1, 4, 1, 1, 1]  # a chunk per frame; the pause in one
    np.testing.assert_array_equal(streamed.frames, whole.frames)
    np.testing.assert_allclose(np.concatenate(chunks), whole.audio, atol=1e-5, rtol=0)
    kinds = [type(e).__name__ for e in evs]
    assert kinds[0] == "SentenceStarted" and kinds[-2:] == ["SentenceDone", "Finished"]
    assert isinstance(evs[0], SentenceStarted) and evs[0].budget == 3


def test_run_long_text_writes_subtitles_json_and_codes(cli_runner, tmp_path):
    (tmp_path / "story.txt").write_text("It was late. Dr. Smith paid $3.50 for tea.\n\nThen he left...")
    res = invoke(
        cli_runner,
        "run",
        "--text-file",
        tmp_path / "story.txt",
        "--model",
        FIXTURE,
        "-b",
        "numpy",
        "--max-audio-ms",
        400,
        "--pause-ms",
        160,
        "-o",
        tmp_path / "story.wav",
        "--srt",
        tmp_path / "story.srt",
        "--vtt",
        tmp_path / "story.vtt",
        "--codes-out",
        tmp_path / "story.npy",
        "--json",
        "--seed",
        4,
    )
    summary = json.loads(res.stdout)
    assert [c["text"] for c in summary["cues"]] == ["It was late.", "Dr. Smith paid $3.50 for tea.", "Then he left..."]
    assert [t for c in summary["cues"] for t in (c["start"], c["end"])] == [0, 0.4, 0.56, 0.96, 1.12, 1.52]
    srt = (tmp_path / "story.srt").read_text()
    assert "00:00:00,560 --> 00:00:00,960\nDr. Smith paid $3.50 for tea." in srt
    assert (tmp_path / "story.vtt").read_text().startswith("WEBVTT")
    wave, sr = sf.read(tmp_path / "story.wav", dtype="float32")
    assert sr == 24000 and len(wave) == 19 * 1920 == len(np.load(tmp_path / "story.npy")) * 1920
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary files left


def test_failed_run_leaves_existing_outputs_alone(cli_runner, tmp_path):
    out = tmp_path / "keep.wav"
    out.write_bytes(b"precious")
    res = cli_runner.invoke(
        cli,
        ["run", "x " * 1500, "--no-split", "--model", str(FIXTURE), "-b", "numpy", "-o", str(out), "--no-watermark"],
    )
    assert res.exit_code == 2 and "does not fit" in res.output
    assert out.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir()] == ["keep.wav"]


def test_dialogue_turns_see_the_turns_before(cli_runner, tmp_path, ctx_wave, monkeypatch):
    sp = fresh()
    VoiceStore().add(make_voice(sp, "ann", 1, [("A voice prompt.", ctx_wave)]))
    script = tmp_path / "talk.txt"
    script.write_text("# a short talk\n[ann] Hi! How are you?\n[1] Fine.\n\n[ann] Good.\n")
    res = invoke(
        cli_runner,
        "dialogue",
        script,
        "--model",
        FIXTURE,
        "-b",
        "numpy",
        "--max-audio-ms",
        240,
        "-o",
        tmp_path / "talk.wav",
        "--srt",
        tmp_path / "talk.srt",
        "--split-dir",
        tmp_path / "turns",
        "--codes-out",
        tmp_path / "talk.npy",
        "--seed",
        1,
    )
    # ann's saved id 1 is taken by the [1] lines: she speaks as 0
    assert "voice ann speaks as speaker 0" in res.output
    srt = (tmp_path / "talk.srt").read_text()
    assert srt.count(" --> ") == 3 and "Hi! How are you?" in srt
    turns = sorted((tmp_path / "turns").iterdir())
    assert [p.name for p in turns] == ["turn-001.wav", "turn-002.wav", "turn-003.wav"]
    whole = sf.read(tmp_path / "talk.wav")[0]
    assert len(sf.read(turns[0])[0]) == (3 + 4 + 3) * 1920  # two sentences and the pause between
    assert len(whole) == len(np.load(tmp_path / "talk.npy")) * 1920

    # the same through the API: each turn's prompt holds the voice, then every turn before it
    seen = recorded_prompts(sp, monkeypatch)
    ann = VoiceStore().get("ann")
    lines = [Line("Hi! How are you?", 0, ann), Line("Fine.", 1), Line("Good.", 0, ann)]
    evs, _ = run(sp.dialogue(lines, settings=GenerationSettings(max_audio_ms=240, seed=1)))
    sents = [e for e in evs if isinstance(e, SentenceDone)]
    np.testing.assert_array_equal(np.concatenate([s.frames for s in sents]), _sentence_frames(tmp_path / "talk.npy"))
    last = sents[-1]
    earlier = [Segment(s.sentence.speaker, s.sentence.text, codes=s.frames.T) for s in sents[:-1]]
    want, _ = sp.generator.prompt("Good.", 0, earlier, voice=ann.segments(0))
    np.testing.assert_array_equal(seen[-1], want)
    assert last.sentence.turn == 2


def _sentence_frames(path: Path) -> np.ndarray:
    """The saved frames without the three 4-frame pauses (sentences of 3 frames each)."""
    f = np.load(path)
    keep = np.concatenate([np.arange(0, 3), np.arange(7, 10), np.arange(14, 17), np.arange(21, 24)])
    return f[keep]


def test_wrong_codec_voice_is_a_clear_error(cli_runner, tmp_path, ctx_wave):
    demo = load_speech("demo", "numpy")
    VoiceStore().add(make_voice(demo, "demo-voice", 0, [("Noise.", ctx_wave)]))
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "Hi.",
            "--voice",
            "demo-voice",
            "--model",
            str(FIXTURE),
            "-b",
            "numpy",
            "--codes-out",
            str(tmp_path / "x.npy"),
        ],
    )
    assert res.exit_code == 2
    assert res.output.startswith("error: voice demo-voice was made with another Mimi codec")


def test_parallel_sentences_are_each_sentence_alone(ctx_wave):
    """--parallel-sentences: every sentence gets the voice only, seed + its index, and exactly
    the frames it gets spoken alone; retries take seed + k * sentences + index."""
    sp = fresh()
    ann = make_ann(sp, ctx_wave)
    text = "One. Two, and more words. Three is here. Four. Five at last."
    settings = GenerationSettings(max_audio_ms=400, seed=20, **SAMPLED)
    evs, done = run(sp.say(text, voice=ann, settings=settings, options=SpeakOptions(parallel=3, pause_ms=0)))
    dones = [e for e in evs if isinstance(e, SentenceDone)]
    assert len(dones) == 5 and sp.generator.batch is None  # its own batch, gone afterwards
    for d in dones:
        assert d.seed == 20 + d.sentence.index
        alone = run(
            fresh().say(
                d.sentence.text,
                voice=ann,
                settings=GenerationSettings(max_audio_ms=400, seed=d.seed, **SAMPLED),
                options=SpeakOptions(split=False),
            )
        )[1]
        np.testing.assert_array_equal(d.frames, alone.frames)
    np.testing.assert_array_equal(done.frames, np.concatenate([d.frames for d in dones]))
    # a runaway sentence is retried with seed + k * sentences + index
    evs, _ = run(
        fresh().say(
            "Hi there. Bye now.",
            settings=GenerationSettings(seed=4, **SAMPLED),
            options=SpeakOptions(parallel=2, retries=1),
        )
    )
    assert [(e.attempts, e.seed) for e in evs if isinstance(e, SentenceDone)] == [(2, 6), (2, 7)]
