"""A third-party format plugin works end to end: the example ``ccsm-npz-format`` (installed by
``make install``) registers ``.npz`` weights, and ``ccsm run --model`` speaks from a checkpoint
stored in it exactly as from the original safetensors."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import soundfile as sf

from ccsm_core.cli import cli
from ccsm_core.errors import FormatError
from ccsm_core.formats.safetensors import load_safetensors

from .test_csm_parity import FIXTURE


@pytest.fixture(autouse=True)
def fresh_plugins(monkeypatch):
    monkeypatch.setattr("ccsm_core.plugins._manager", None)


def npz_checkpoint(folder):
    """The fixture checkpoint with its CSM and Mimi weights re-stored as .npz archives."""
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "mimi_config.json"):
        shutil.copy(FIXTURE / name, folder / name)
    for stem in ("model", "mimi"):
        arrays = {k: t.numpy() for k, t in load_safetensors(FIXTURE / f"{stem}.safetensors").items()}
        np.savez(folder / f"{stem}.npz", **arrays)
    return folder


def test_the_npz_plugin_is_installed_and_registered(cli_runner):
    res = cli_runner.invoke(cli, ["plugins", "--json"])
    recs = {r["name"]: r for r in json.loads(res.output)}
    assert recs["ccsm_npz"]["status"] == "ok"
    assert recs["ccsm_npz"]["registered"] == {"formats": ["npz"]}


def test_run_speaks_from_npz_weights_as_from_safetensors(cli_runner, tmp_path):
    model = npz_checkpoint(tmp_path / "csm-npz")
    assert not list(model.glob("*.safetensors"))
    ref = np.load(FIXTURE / "reference.npz")
    out = tmp_path / "hello.wav"
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "Hello from CSM.",
            "--model",
            str(model),
            "--speaker",
            "0",
            "--topk",
            "1",
            "--max-audio-ms",
            "800",
            "--no-watermark",
            "-o",
            str(out),
        ],
    )
    assert res.exit_code == 0, res.output
    wave, sr = sf.read(out, dtype="float32")
    assert sr == 24000 and wave.shape == ref["text_audio"].shape
    assert np.max(np.abs(wave - ref["text_audio"])) <= 1e-4


def test_weights_are_opened_by_sniffing_before_the_suffix(tmp_path):
    from ccsm_core.loading.weights import format_of, open_weights

    arrays = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
    np.savez(tmp_path / "weights.npz", **arrays)
    shutil.copy(tmp_path / "weights.npz", tmp_path / "weights.bin-like")  # no suffix a format claims
    assert format_of(tmp_path / "weights.bin-like").name == "npz"  # found by its first bytes
    np.testing.assert_array_equal(open_weights(tmp_path / "weights.bin-like")["w"].numpy(), arrays["w"])
    (tmp_path / "odd.data").write_bytes(b"\x00" * 100)
    with pytest.raises(FormatError, match="no installed weight format recognises"):
        format_of(tmp_path / "odd.data")
