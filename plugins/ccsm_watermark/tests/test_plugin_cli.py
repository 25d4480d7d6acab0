"""Registration through ccsm's plugin manager and the ``watermark`` CLI commands."""

from __future__ import annotations

import json
import os

import click
import numpy as np
import pytest
import soundfile as sf
from ccsm_watermark import METHODS, PUBLIC_DEFAULT_KEY, plugin
from click.testing import CliRunner
from conftest import speechlike

from ccsm_core.errors import CcsmError


def test_registered_through_entry_point() -> None:
    from ccsm_core.plugins import PluginManager

    pm = PluginManager()
    reg = pm.registry("watermarkers")
    for name in METHODS:
        assert name in reg
        entry = reg.get(name)
        assert entry.payload_bits == 32
        wm = entry.factory(PUBLIC_DEFAULT_KEY)
        assert hasattr(wm, "embed") and hasattr(wm, "detect")
    rec = pm.records["ccsm_watermark"]
    assert rec.status == "ok", rec.error
    assert sorted(rec.registered["watermarkers"]) == sorted(METHODS)


@pytest.fixture()
def cli() -> click.Group:
    @click.group()
    def root() -> None:
        pass

    plugin.register_commands(cli=root)
    return root


@pytest.fixture()
def wav(tmp_path) -> str:
    path = str(tmp_path / "in.wav")
    sf.write(path, speechlike(6.0, 24000, seed=5), 24000, subtype="PCM_16")
    return path


def test_keygen_embed_detect(cli: click.Group, wav: str, tmp_path) -> None:
    run = CliRunner()
    key = str(tmp_path / "k")
    r = run.invoke(cli, ["watermark", "keygen", "-o", key])
    assert r.exit_code == 0, r.output
    assert len(bytes.fromhex(open(key).read().strip())) == 32
    assert oct(os.stat(key).st_mode & 0o777) == "0o600"
    out = str(tmp_path / "out.wav")
    r = run.invoke(cli, ["watermark", "embed", wav, "-o", out, "--key-file", key, "--payload", "0xC0FFEE42"])
    assert r.exit_code == 0, r.output
    assert sf.info(out).subtype == "PCM_16"
    r = run.invoke(cli, ["watermark", "detect", out, "--key-file", key, "--json"])
    assert r.exit_code == 0, r.output
    res = json.loads(r.stdout)
    assert res["present"] is True and res["payload"] == "0xC0FFEE42" and res["p_value"] < 1e-6
    r = run.invoke(cli, ["watermark", "detect", wav, "--key-file", key])
    assert r.exit_code == 0 and "absent" in r.stdout
    r = run.invoke(cli, ["watermark", "detect", out, "--key-file", key, "--method", "patchwork", "--json"])
    assert json.loads(r.stdout)["present"] is False
    # the keygen refuses to overwrite; stdout mode prints a key
    assert isinstance(run.invoke(cli, ["watermark", "keygen", "-o", key]).exception, CcsmError)
    assert len(run.invoke(cli, ["watermark", "keygen"]).stdout.strip()) == 64


def test_public_default_key_when_none_given(cli: click.Group, wav: str, tmp_path) -> None:
    run = CliRunner()
    out = str(tmp_path / "pub.flac")
    r = run.invoke(cli, ["watermark", "embed", wav, "-o", out, "--payload", "7", "--method", "patchwork"])
    assert r.exit_code == 0 and "public default key" in r.stderr
    res = json.loads(run.invoke(cli, ["watermark", "detect", out, "--json"]).stdout)
    assert res["present"] is True and res["payload"] == "0x00000007" and res["method"] == "patchwork"


def test_short_file_cannot_tell(cli: click.Group, tmp_path) -> None:
    path = str(tmp_path / "short.wav")
    sf.write(path, np.zeros(8000, np.float32), 16000)
    res = json.loads(CliRunner().invoke(cli, ["watermark", "detect", path, "--json"]).stdout)
    assert res["present"] is None and res["payload"] is None


def _error(cli: click.Group, args: list[str]) -> CcsmError:
    r = CliRunner().invoke(cli, args)
    assert isinstance(r.exception, CcsmError), (r.exception, r.output)
    line = r.exception.one_line()
    assert "\n" not in line and line
    return r.exception


def test_bad_input_gives_one_line_errors(cli: click.Group, wav: str, tmp_path) -> None:
    bad_key = tmp_path / "bad"
    bad_key.write_text("not a key\n")
    short_key = tmp_path / "short"
    short_key.write_text("abcd\n")
    not_audio = tmp_path / "x.wav"
    not_audio.write_text("hello")
    out = str(tmp_path / "o.wav")
    assert "not found" in str(_error(cli, ["watermark", "detect", str(tmp_path / "missing.wav")]))
    assert "not hex" in str(_error(cli, ["watermark", "detect", wav, "--key-file", str(bad_key)]))
    assert "16 to 64" in str(_error(cli, ["watermark", "embed", wav, "-o", out, "--key-file", str(short_key)]))
    assert "not found" in str(
        _error(cli, ["watermark", "embed", wav, "-o", out, "--key-file", str(tmp_path / "nokey")])
    )
    assert "32 bits" in str(_error(cli, ["watermark", "embed", wav, "-o", out, "--payload", "0x100000000"]))
    assert "32 bits" in str(_error(cli, ["watermark", "embed", wav, "-o", out, "--payload", "-1"]))
    assert "not an integer" in str(_error(cli, ["watermark", "embed", wav, "-o", out, "--payload", "abc"]))
    assert "cannot read" in str(_error(cli, ["watermark", "detect", str(not_audio)]))
    assert not os.path.exists(out)


def test_detect_many_files_a_folder_and_jobs(cli: click.Group, wav: str, tmp_path) -> None:
    run = CliRunner()
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(3):
        r = run.invoke(cli, ["watermark", "embed", wav, "-o", str(folder / f"m{i}.wav"), "--payload", str(i + 1)])
        assert r.exit_code == 0, r.output
    sf.write(str(folder / "plain.flac"), sf.read(wav)[0], 24000)
    r = run.invoke(cli, ["watermark", "detect", str(folder), "--jobs", "2", "--json", "--method", "ss-stft"])
    assert r.exit_code == 0, r.output
    rows = {os.path.basename(d["file"]): d for d in map(json.loads, r.stdout.splitlines())}
    assert sorted(rows) == ["m0.wav", "m1.wav", "m2.wav", "plain.flac"]
    for i in range(3):
        row = rows[f"m{i}.wav"]
        assert row["present"] is True and row["payload"] == f"0x{i + 1:08X}" and row["payload_confident"] is True
        assert row["payload_p_value"] < 1e-4
    assert rows["plain.flac"]["present"] is False and rows["plain.flac"]["payload"] is None
    assert "--jobs 0 is below 1" in str(_error(cli, ["watermark", "detect", wav, "--jobs", "0"]))
    (tmp_path / "empty").mkdir()
    assert "no audio files" in str(_error(cli, ["watermark", "detect", str(tmp_path / "empty")]))


def test_detect_goes_on_past_unreadable_files(cli: click.Group, wav: str, tmp_path) -> None:
    run = CliRunner()
    folder = tmp_path / "mixed"
    folder.mkdir()
    good = str(folder / "b_good.wav")
    assert run.invoke(cli, ["watermark", "embed", wav, "-o", good, "--payload", "9"]).exit_code == 0
    (folder / "a_broken.wav").write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    (folder / "c_text.flac").write_text("not audio")
    missing = str(tmp_path / "missing.wav")
    for extra in ([], ["--jobs", "2"]):
        r = run.invoke(cli, ["watermark", "detect", str(folder), missing, "--json", "--method", "ss-stft", *extra])
        assert isinstance(r.exception, CcsmError) and "3 of 4 files could not be read" in str(r.exception)
        rows = [json.loads(line) for line in r.stdout.splitlines()]
        assert [os.path.basename(d["file"]) for d in rows] == [
            "a_broken.wav",
            "b_good.wav",
            "c_text.flac",
            "missing.wav",
        ]
        assert rows[1]["present"] is True and rows[1]["payload"] == "0x00000009"
        for d in (rows[0], rows[2], rows[3]):
            assert d["error"] and "\n" not in d["error"] and "present" not in d
        assert "not found" in rows[3]["error"]
    r = run.invoke(cli, ["watermark", "detect", str(folder), "--method", "ss-stft"])
    assert isinstance(r.exception, CcsmError) and "2 of 3" in str(r.exception)
    assert "b_good.wav: watermark present" in r.stdout
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 2 and all("hint: " in line for line in errors)
    # all files fine: exit status 0
    assert run.invoke(cli, ["watermark", "detect", good, good, "--method", "ss-stft"]).exit_code == 0
