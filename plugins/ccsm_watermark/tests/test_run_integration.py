"""`ccsm run` marks its audio with this plugin by default."""

from __future__ import annotations

import numpy as np
import soundfile as sf
from ccsm_watermark import DEFAULT_METHOD, PUBLIC_DEFAULT_KEY, create

from ccsm_core.cli import cli


def _run(cli_runner, tmp_path, monkeypatch, *extra, text="Hi"):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    out = tmp_path / "out.wav"
    res = cli_runner.invoke(
        cli,
        [
            "run",
            text,
            "--model",
            "demo",
            "--seed",
            "2",
            "--min-frames",
            "30",
            "--max-audio-ms",
            "2400",
            "-o",
            str(out),
            *extra,
        ],
    )
    assert res.exit_code == 0, res.output
    return sf.read(out, dtype="float32")[0]


def test_run_output_is_marked_with_public_key(cli_runner, tmp_path, monkeypatch):
    wave = _run(cli_runner, tmp_path, monkeypatch)
    assert create(DEFAULT_METHOD, PUBLIC_DEFAULT_KEY).detect(wave, 24000).present is True


def test_no_watermark(cli_runner, tmp_path, monkeypatch):
    wave = _run(cli_runner, tmp_path, monkeypatch, "--no-watermark")
    assert create(DEFAULT_METHOD, PUBLIC_DEFAULT_KEY).detect(wave, 24000).present is not True


def test_private_key(cli_runner, tmp_path, monkeypatch):
    key = tmp_path / "k"
    assert cli_runner.invoke(cli, ["watermark", "keygen", "-o", str(key)]).exit_code == 0
    wave = _run(cli_runner, tmp_path, monkeypatch, "--watermark-key", str(key))
    from ccsm_watermark.keys import load

    assert create(DEFAULT_METHOD, load(str(key))).detect(wave, 24000).present is True
    assert create(DEFAULT_METHOD, PUBLIC_DEFAULT_KEY).detect(wave, 24000).present is not True
    assert np.isfinite(wave).all()


def test_long_text_is_marked_as_one_output(cli_runner, tmp_path, monkeypatch):
    text = "First part of it. Then the second part. And the end."
    wave = _run(cli_runner, tmp_path, monkeypatch, "--max-audio-ms", "1200", text=text)
    plain = _run(cli_runner, tmp_path, monkeypatch, "--max-audio-ms", "1200", "--no-watermark", text=text)
    assert len(wave) == len(plain) == (3 * 15 + 2 * 4) * 1920  # three sentences, two pauses
    detector = create(DEFAULT_METHOD, PUBLIC_DEFAULT_KEY)
    assert detector.detect(wave, 24000).present is True
    assert detector.detect(plain, 24000).present is not True


def test_streamed_output_is_marked(cli_runner, tmp_path, monkeypatch):
    text = "First part of it. Then the second part. And the end."
    wave = _run(cli_runner, tmp_path, monkeypatch, "--max-audio-ms", "1200", "--stream", text=text)
    assert len(wave) == (3 * 15 + 2 * 4) * 1920
    assert create(DEFAULT_METHOD, PUBLIC_DEFAULT_KEY).detect(wave, 24000).present is True
