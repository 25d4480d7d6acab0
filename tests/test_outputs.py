"""Outputs: written under a temporary name and renamed on success (nothing left behind on a
failure or Ctrl-C), through symlinks, never over a device or folder, checked before the work
starts; ``--stream -o`` keeps the old file until the stream ends and a stopped stream's audio
in ``OUT.partial``; the path reported is the one written."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from ccsm_core.cli import cli
from ccsm_core.errors import UsageError
from ccsm_core.files import atomic_path, check_output, write_atomic

ROOT = Path(__file__).resolve().parents[1]
TEXT_GGUF = ROOT / "tests" / "fixtures" / "text-archs" / "llama.gguf"


def leftovers(folder: Path) -> list[str]:
    """Temporary files ``atomic_path`` would leave in ``folder``."""
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name)


def error_line(res) -> str:
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    lines = [ln for ln in res.stderr.splitlines() if not ln.startswith("note: ")]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "(hint: " in lines[0], res.stderr
    return lines[0]


# --- files.py --------------------------------------------------------------------------------


def test_atomic_path_replaces_on_success_only(tmp_path):
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    with atomic_path(out) as tmp:
        tmp.write_bytes(b"new")
        assert out.read_bytes() == b"old"
    assert out.read_bytes() == b"new" and not leftovers(tmp_path)
    with pytest.raises(RuntimeError), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("fails")
    assert out.read_bytes() == b"new" and not leftovers(tmp_path)


def test_ctrl_c_leaves_nothing_behind(tmp_path):
    out = tmp_path / "out.bin"
    with pytest.raises(KeyboardInterrupt), atomic_path(out) as tmp:
        tmp.write_bytes(b"half")
        raise KeyboardInterrupt
    assert not out.exists() and not leftovers(tmp_path)


def test_partial_keeps_a_failed_write(tmp_path):
    out, partial = tmp_path / "out.wav", tmp_path / "out.wav.partial"
    out.write_bytes(b"old")
    with pytest.raises(KeyboardInterrupt), atomic_path(out, partial=partial) as tmp:
        tmp.write_bytes(b"some")
        raise KeyboardInterrupt
    assert out.read_bytes() == b"old" and partial.read_bytes() == b"some" and not leftovers(tmp_path)


def test_a_symlink_output_writes_its_target(tmp_path):
    real = tmp_path / "real.bin"
    real.write_bytes(b"old")
    link = tmp_path / "link.bin"
    link.symlink_to(real)
    write_atomic(link, b"new")
    assert link.is_symlink() and real.read_bytes() == b"new"
    with atomic_path(link) as tmp:
        tmp.write_bytes(b"newer")
    assert link.is_symlink() and real.read_bytes() == b"newer" and not leftovers(tmp_path)


def test_a_dangling_symlink_output_creates_its_target(tmp_path):
    link = tmp_path / "link.bin"
    link.symlink_to(tmp_path / "made.bin")
    write_atomic(link, b"x")
    assert link.is_symlink() and (tmp_path / "made.bin").read_bytes() == b"x"


@pytest.mark.parametrize("device", ["/dev/null", "/dev/zero"])
def test_a_device_is_never_replaced(tmp_path, device):
    if not os.path.exists(device):
        pytest.skip(f"no {device} here")
    with pytest.raises(UsageError, match="not a regular file"):
        check_output(device)
    link = tmp_path / "to-device"
    link.symlink_to(device)
    with pytest.raises(UsageError):
        write_atomic(link, b"x")
    assert link.is_symlink() and Path(device).exists() and not Path(device).is_file()


def test_a_folder_or_fifo_or_missing_folder_is_refused(tmp_path):
    with pytest.raises(UsageError, match="folder"):
        check_output(tmp_path)
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    with pytest.raises(UsageError, match="FIFO"):
        check_output(fifo)
    with pytest.raises(UsageError, match="does not exist"):
        check_output(tmp_path / "no" / "out.wav")


def test_write_atomic_without_replace_keeps_a_symlink(tmp_path):
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(FileExistsError):
        write_atomic(link, b"x", replace=False)
    assert not (tmp_path / "nowhere").exists()


# --- commands: checked before the work -------------------------------------------------------


def test_outputs_into_a_missing_folder_fail_before_generating(cli_runner, tmp_path, monkeypatch):
    import ccsm_core.speech

    def no_model(*a, **k):
        raise AssertionError("the model was loaded before the outputs were checked")

    monkeypatch.setattr(ccsm_core.speech, "load_speech", no_model)
    missing = str(tmp_path / "no" / "x")
    for args in (
        ["run", "hi", "--model", "demo", "--codes-out", missing + ".npy"],
        ["run", "hi", "--model", "demo", "-o", missing + ".wav"],
        ["run", "hi", "--model", "demo", "--srt", missing + ".srt"],
        ["run", "hi", "--model", "demo", "-o", str(tmp_path)],
    ):
        line = error_line(cli_runner.invoke(cli, args))
        assert "does not exist" in line or "folder" in line or "extension" in line, line


def test_encode_into_a_missing_folder_fails_before_encoding(cli_runner, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, np.zeros(2400, np.float32), 24000)
    line = error_line(cli_runner.invoke(cli, ["encode", str(wav), "-o", str(tmp_path / "no" / "c.npy")]))
    assert "does not exist" in line  # not "no model given": checked before the codec loads


def test_quantize_to_a_device_or_missing_folder(cli_runner, tmp_path):
    for out in ("/dev/null", str(tmp_path / "no" / "q.gguf")):
        error_line(cli_runner.invoke(cli, ["quantize", str(TEXT_GGUF), out, "--type", "q8_0"]))


# --- commands: atomic, exact names -----------------------------------------------------------


def test_codes_out_writes_exactly_the_name_given(cli_runner, tmp_path):
    out = tmp_path / "codes.bin"
    res = cli_runner.invoke(cli, ["run", "hi", "--model", "demo", "--codes-out", str(out), "--max-audio-ms", "240"])
    assert res.exit_code == 0, res.output
    assert out.exists() and not (tmp_path / "codes.bin.npy").exists()
    assert f"-> {out}" in res.stderr
    assert np.load(out).shape[1] == 32 and not leftovers(tmp_path)


def test_quantize_interrupted_leaves_the_old_file_and_no_temp(cli_runner, tmp_path, monkeypatch):
    import ccsm_core.formats.gguf_writer as gw

    out = tmp_path / "q.gguf"
    out.write_bytes(b"old model")
    real = gw._writer_class

    def interrupted():
        class Writer(real()):  # type: ignore[misc]
            def write_tensors_to_file(self, *a, **k):
                raise KeyboardInterrupt

        return Writer

    monkeypatch.setattr(gw, "_writer_class", interrupted)
    res = cli_runner.invoke(cli, ["quantize", str(TEXT_GGUF), str(out), "--type", "q8_0"])
    assert res.exit_code == 130, res.output
    assert out.read_bytes() == b"old model" and not leftovers(tmp_path)


def test_quantize_through_a_symlink(cli_runner, tmp_path):
    real = tmp_path / "real.gguf"
    real.write_bytes(b"old")
    link = tmp_path / "link.gguf"
    link.symlink_to(real)
    res = cli_runner.invoke(cli, ["quantize", str(TEXT_GGUF), str(link), "--type", "q8_0"])
    assert res.exit_code == 0, res.output
    assert link.is_symlink() and real.read_bytes()[:4] == b"GGUF" and not leftovers(tmp_path)


# --- --stream -o -----------------------------------------------------------------------------


def _stop_after_audio(monkeypatch, exc: BaseException) -> None:
    """Make ``speak`` raise ``exc`` after its second audio chunk."""
    import ccsm_core.pipeline as pipeline

    real = pipeline.speak

    def speak(*a, **k):
        seen = 0
        for ev in real(*a, **k):
            yield ev
            if isinstance(ev, pipeline.Audio):
                seen += 1
                if seen == 2:
                    raise exc

    monkeypatch.setattr(pipeline, "speak", speak)


@pytest.mark.parametrize("exc", [KeyboardInterrupt(), UsageError("stopped", "for the test")])
def test_a_stopped_stream_keeps_the_old_file_and_a_valid_partial(cli_runner, tmp_path, monkeypatch, exc):
    out = tmp_path / "out.wav"
    sf.write(out, np.full(480, 0.5, np.float32), 24000)
    old = out.read_bytes()
    _stop_after_audio(monkeypatch, exc)
    res = cli_runner.invoke(
        cli,
        ["run", "hi", "--model", "demo", "--stream", "-o", str(out), "--max-audio-ms", "2000", "--min-frames", "20"],
    )
    assert res.exit_code == (130 if isinstance(exc, KeyboardInterrupt) else 2), res.output
    assert out.read_bytes() == old
    partial = tmp_path / "out.wav.partial"
    assert f"{partial}" in res.stderr
    info = sf.info(
        str(partial),
    )
    data, rate = sf.read(str(partial))
    assert rate == 24000 and len(data) == info.frames > 1920  # sizes patched: over a frame of audio
    assert not leftovers(tmp_path)


def test_a_finished_stream_replaces_the_file(cli_runner, tmp_path):
    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    res = cli_runner.invoke(cli, ["run", "hi", "--model", "demo", "--stream", "-o", str(out), "--max-audio-ms", "240"])
    assert res.exit_code == 0, res.output
    assert sf.info(str(out)).frames > 0
    assert not (tmp_path / "out.wav.partial").exists() and not leftovers(tmp_path)


def test_sigterm_mid_stream_keeps_the_old_file_and_a_valid_partial(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "out.wav"
    out.write_bytes(b"old")
    text = " ".join(["Hello there, friend."] * 40)
    cmd = [sys.executable, "-c", "from ccsm_core.cli import main; main()", "run", text, "--model", "demo"]
    proc = subprocess.Popen([*cmd, "--stream", "-o", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if any(p.stat().st_size > 100_000 for p in tmp_path.glob(".out.wav.*.tmp*")):
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert out.read_bytes() == b"old"
    info = sf.info(str(tmp_path / "out.wav.partial"))
    assert info.samplerate == 24000 and info.frames > 1920, err
    assert "out.wav.partial" in err and "Traceback" not in err
    assert not leftovers(tmp_path)


def test_encode_writes_exactly_the_name_given_and_decode_replaces_atomically(cli_runner, tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, (0.1 * np.sin(np.arange(4800) / 7)).astype(np.float32), 24000)
    codes = tmp_path / "codes.bin"
    res = cli_runner.invoke(cli, ["encode", str(wav), "-o", str(codes), "--model", "demo"])
    assert res.exit_code == 0, res.output
    assert codes.exists() and not (tmp_path / "codes.bin.npy").exists() and f"-> {codes}" in res.stderr
    out = tmp_path / "back.wav"
    out.write_bytes(b"old")
    res = cli_runner.invoke(cli, ["decode", str(codes), "-o", str(out), "--model", "demo"])
    assert res.exit_code == 0, res.output
    assert sf.info(str(out)).frames > 0 and not leftovers(tmp_path)
