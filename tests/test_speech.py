"""Speech end to end: ccsm run to audio, context audio, streaming, encode/decode, the demo model."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf

from ccsm_core.audio import AudioWriter, read_audio, resample, write_audio
from ccsm_core.cli import cli
from ccsm_core.errors import ModelError, UsageError

from .test_csm_parity import FIXTURE


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE / "reference.npz")


@pytest.fixture(autouse=True)
def demo_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path_factory.getbasetemp() / "cache"))


def invoke(cli_runner, *args):
    res = cli_runner.invoke(cli, [str(a) for a in args])
    assert res.exit_code == 0, res.output
    return res


def test_run_text_case_audio_matches_original(cli_runner, tmp_path, ref):
    out = tmp_path / "hello.wav"
    invoke(
        cli_runner,
        "run",
        "Hello from CSM.",
        "--model",
        FIXTURE,
        "--speaker",
        0,
        "--topk",
        1,
        "--max-audio-ms",
        800,
        "--no-watermark",
        "-o",
        out,
    )
    wave, sr = sf.read(out, dtype="float32")
    assert sr == 24000 and wave.shape == ref["text_audio"].shape
    assert np.max(np.abs(wave - ref["text_audio"])) <= 1e-4


def test_run_ctx_case_audio_matches_original(cli_runner, tmp_path, ref):
    out = tmp_path / "reply.wav"
    invoke(
        cli_runner,
        "run",
        "Second turn, same voice.",
        "--model",
        FIXTURE,
        "--speaker",
        0,
        "--topk",
        1,
        "--max-audio-ms",
        800,
        "--no-watermark",
        "--context",
        1,
        "A voice prompt.",
        FIXTURE / "context.wav",
        "-o",
        out,
        "--codes-out",
        tmp_path / "f.npy",
    )
    wave, _ = sf.read(out, dtype="float32")
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), ref["ctx_frames"])
    assert np.max(np.abs(wave - ref["ctx_audio"])) <= 1e-4


def test_stream_equals_one_shot(cli_runner, tmp_path):
    a, b = tmp_path / "a.wav", tmp_path / "b.wav"
    common = ["Hi", "--model", FIXTURE, "--topk", 1, "--max-audio-ms", 800, "--no-watermark"]
    invoke(cli_runner, "run", *common, "-o", a)
    invoke(cli_runner, "run", *common, "-o", b, "--stream")
    wa, wb = sf.read(a, dtype="float32")[0], sf.read(b, dtype="float32")[0]
    assert wa.shape == wb.shape
    assert np.max(np.abs(wa - wb)) <= 1e-5


def test_stream_to_stdout_is_raw_float32(cli_runner, tmp_path):
    res = cli_runner.invoke(
        cli, ["run", "Hi", "--model", str(FIXTURE), "--topk", "1", "--max-audio-ms", "400", "--no-watermark", "-o", "-"]
    )
    assert res.exit_code == 0
    raw = np.frombuffer(res.stdout_bytes, "<f4")
    assert raw.size == 5 * 1920


def test_encode_decode_commands(cli_runner, tmp_path):
    mimi_ref = np.load(FIXTURE / "mimi_reference.npz")
    codes = tmp_path / "voice.codes.npy"
    invoke(cli_runner, "encode", FIXTURE / "context.wav", "-o", codes, "--model", FIXTURE)
    np.testing.assert_array_equal(np.load(codes).T, mimi_ref["enc_codes"][0])
    frames = tmp_path / "frames.npy"
    np.save(frames, mimi_ref["dec_codes"][0].T)
    out = tmp_path / "out.wav"
    invoke(cli_runner, "decode", frames, "-o", out, "--model", FIXTURE)
    wave, _ = sf.read(out, dtype="float32")
    assert np.max(np.abs(wave - mimi_ref["dec_out"][0, 0])) <= 1e-4
    bad = tmp_path / "bad.npy"
    np.save(bad, np.zeros((5, 7), np.int64))
    res = cli_runner.invoke(cli, ["decode", str(bad), "-o", str(out), "--model", str(FIXTURE)])
    assert res.exit_code == 2 and "expected integer codes" in res.output


def test_context_codes_file(cli_runner, tmp_path, ref):
    mimi_ref = np.load(FIXTURE / "mimi_reference.npz")
    codes = tmp_path / "ctx.npy"
    np.save(codes, mimi_ref["enc_codes"][0].T)
    invoke(
        cli_runner,
        "run",
        "Second turn, same voice.",
        "--model",
        FIXTURE,
        "--topk",
        1,
        "--max-audio-ms",
        800,
        "--context",
        1,
        "A voice prompt.",
        codes,
        "--codes-out",
        tmp_path / "f.npy",
    )
    np.testing.assert_array_equal(np.load(tmp_path / "f.npy"), ref["ctx_frames"])


def test_demo_model(cli_runner, tmp_path):
    out = tmp_path / "demo.wav"
    res = invoke(cli_runner, "run", "Hi", "--model", "demo", "--seed", 1, "--max-audio-ms", 800, "-o", out)
    assert "not speech" in res.output
    info = sf.info(out)
    assert info.samplerate == 24000 and 0 < info.frames <= 10 * 1920
    again = tmp_path / "again.wav"
    invoke(cli_runner, "run", "Hi", "--model", "demo", "--seed", 1, "--max-audio-ms", 800, "-o", again)
    np.testing.assert_array_equal(sf.read(out)[0], sf.read(again)[0])  # deterministic, cached


def test_model_sources(cli_runner, tmp_path, monkeypatch):
    from ccsm_core.loading.sources import resolve_model

    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ModelError, match="not in the Hugging Face cache"):
        resolve_model("sesame/csm-1b")
    with pytest.raises(ModelError, match="no model given") as e:
        resolve_model(None)
    assert "ccsm download" in e.value.hint and "demo" in e.value.hint
    monkeypatch.setenv("CCSM_MODEL", str(FIXTURE))
    res = cli_runner.invoke(
        cli, ["run", "Hi", "--topk", "1", "--max-audio-ms", "160", "--codes-out", str(tmp_path / "x.npy")]
    )
    assert res.exit_code == 0, res.output


def test_audio_io(tmp_path):
    t = np.arange(48000) / 48000
    stereo = np.stack([np.sin(2 * np.pi * 440 * t), np.zeros_like(t)], 1).astype(np.float32)
    sf.write(tmp_path / "s.wav", stereo, 48000)
    mono = read_audio(tmp_path / "s.wav")
    assert mono.shape == (24000,)
    np.testing.assert_allclose(np.max(np.abs(mono[1000:-1000])), 0.5, atol=0.01)  # channels averaged
    np.testing.assert_allclose(resample(mono, 24000, 24000), mono)
    with pytest.raises(UsageError, match="does not exist"):
        read_audio(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"RIFF1234WAVEjunk")
    with pytest.raises(Exception) as e:
        read_audio(tmp_path / "junk.wav")
    assert "cannot read audio" in str(e.value)
    with pytest.raises(UsageError, match="unknown audio extension"):
        write_audio(str(tmp_path / "x.mp3"), mono)


def test_no_silent_clipping(tmp_path, capsys):
    loud = (np.sin(np.linspace(0, 100, 24000)) * 2).astype(np.float32)
    write_audio(str(tmp_path / "f.wav"), loud)  # float WAV keeps the values
    assert np.max(np.abs(sf.read(tmp_path / "f.wav", dtype="float32")[0])) == pytest.approx(2.0, rel=1e-6)
    write_audio(str(tmp_path / "p.wav"), loud, pcm16=True)
    pcm = sf.read(tmp_path / "p.wav", dtype="float32")[0]
    assert np.max(np.abs(pcm)) < 1.0 and np.max(np.abs(pcm)) > 0.99
    assert "scaled" in capsys.readouterr().err


def test_streaming_writer_chunks_equal_whole(tmp_path):
    x = np.random.default_rng(0).standard_normal(24000).astype(np.float32) * 0.1
    with AudioWriter(str(tmp_path / "c.wav"), out_rate=16000) as w:
        for i in range(0, 24000, 1920):
            w.write(x[i : i + 1920])
    write_audio(str(tmp_path / "w.wav"), x, out_rate=16000)
    a, b = sf.read(tmp_path / "c.wav")[0], sf.read(tmp_path / "w.wav")[0]
    assert a.shape == b.shape == (16000,)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_repo_id_resolves_offline_from_the_cache(cli_runner, tmp_path, monkeypatch, ref):
    """A Hugging Face cache laid out as huggingface_hub writes it is used without a network."""
    import shutil

    cache = tmp_path / "hub"
    snap = cache / "models--acme--csm-tiny" / "snapshots" / ("a" * 40)
    snap.mkdir(parents=True)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "mimi.safetensors", "mimi_config.json"):
        shutil.copy(FIXTURE / name, snap / name)
    (cache / "models--acme--csm-tiny" / "refs").mkdir()
    (cache / "models--acme--csm-tiny" / "refs" / "main").write_text("a" * 40)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_CACHE", str(cache))
    out = tmp_path / "f.npy"
    invoke(
        cli_runner,
        "run",
        "Hello from CSM.",
        "--model",
        "acme/csm-tiny",
        "--topk",
        1,
        "--max-audio-ms",
        800,
        "--codes-out",
        out,
    )
    np.testing.assert_array_equal(np.load(out), ref["text_frames"])
