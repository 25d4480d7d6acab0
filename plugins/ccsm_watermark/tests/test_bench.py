"""The benchmark's quick run: every kind of material, attacks, quality, false-positive trials."""

from __future__ import annotations

import shutil

import pytest
from ccsm_watermark import bench

pytest.importorskip("pesq", reason="pip install -e 'plugins/ccsm_watermark[test]'")
pytestmark = pytest.mark.skipif(
    not (shutil.which("ffmpeg") and shutil.which("espeak-ng")), reason="needs ffmpeg and espeak-ng"
)


def test_quick_run_reports_every_kind(tmp_path, capsys) -> None:
    code = bench.main(["--quick", "--methods", "ss-stft", "--work", str(tmp_path), "--json", str(tmp_path / "r.json")])
    assert code == 0
    import json

    res = json.loads((tmp_path / "r.json").read_text())["ss-stft"]
    assert sorted(res) == sorted(bench.KINDS)
    for kind, r in res.items():
        assert list(r["rows"]) == list(bench.QUICK_ATTACKS)
        assert r["rows"]["none"] == {"exact": 1, "det": 1, "wrong": 0, "n": 1}, kind
        assert r["fp"]["trials"] == 3 * len(bench.QUICK_ATTACKS) and r["fp"]["present"] == 0
        assert r["fp"]["payloads"] == 0 and r["fp"]["min_p"] > 1e-6
        q = r["quality"][0]
        assert 10.0 < q["snr"] < 40.0 and len(q["bands"]) == len(bench.SPECTRAL_BANDS)
        assert ("pesq" in q) == (kind in bench.PESQ_KINDS) and ("pesq_speech" in q) == (kind == "speech+music")
        assert r["speed"]["embed_x"] > 1.0 and r["speed"]["detect_x"] > 1.0
    out = capsys.readouterr().out
    assert (
        "| SNR dB, mean (min) | " in out
        and "| change vs signal 2-4 kHz, dB | " in out
        and "| mp3 64k | " in out
        and "False positives: 0/48" in out
    )


def test_bad_options_are_refused(capsys) -> None:
    assert bench.main(["--attacks", "none,nope"]) == 2
    assert bench.main(["--kinds", "opera"]) == 2
    assert "nope" in capsys.readouterr().err
