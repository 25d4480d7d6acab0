"""Checkpoint folders, configs and damaged weight files."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from ccsm_core.errors import FormatError, ModelError
from ccsm_core.formats.safetensors import load_safetensors, save_safetensors
from ccsm_core.loading.csm import load_csm
from ccsm_core.models.config import FLAVORS, CsmConfig
from ccsm_core.testing.models import tiny_csm_tensors


def test_known_flavours():
    cfg = CsmConfig.from_dict({"backbone_flavor": "llama-1B", "decoder_flavor": "llama-100M"})
    assert (cfg.backbone.num_layers, cfg.backbone.embed_dim, cfg.backbone.num_kv_heads) == (16, 2048, 8)
    assert (cfg.decoder.num_layers, cfg.decoder.embed_dim, cfg.decoder.head_dim) == (4, 1024, 128)
    assert cfg.text_vocab_size == 128_256 and cfg.audio_vocab_size == 2051


def test_rope_frequencies_llama3_scaling():
    base = lambda d: 1.0 / 500000 ** (np.arange(0, d, 2) / d)  # noqa: E731
    for name, kept, divided in (("llama-1B", 15, 14), ("llama-100M", 29, 29)):
        f = FLAVORS[name].rope_freqs()
        b = base(FLAVORS[name].head_dim)
        assert np.isclose(f, b, rtol=1e-6).sum() == kept
        assert np.isclose(f, b / 32, rtol=1e-6).sum() == divided


def test_unknown_flavour_and_bad_flavour_keys():
    with pytest.raises(ModelError, match="unknown backbone_flavor"):
        CsmConfig.from_dict({"backbone_flavor": "llama-7B"})
    with pytest.raises(ModelError, match="unknown flavour keys"):
        CsmConfig.from_dict({"backbone_flavor": "x", "flavors": {"x": {"num_layers": 1, "dim": 3}}})


def test_pickle_refused(tmp_path):
    (tmp_path / "ckpt.pt").write_bytes(b"\x80\x04not really")
    with pytest.raises(FormatError, match="pickled") as e:
        load_csm(tmp_path / "ckpt.pt", "numpy")
    assert "safetensors" in e.value.hint
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FormatError, match="only pickled weights"):
        load_csm(tmp_path, "numpy")


def test_missing_pieces(tmp_path, tiny_csm_dir):
    with pytest.raises(ModelError, match="does not exist"):
        load_csm(tmp_path / "nope", "numpy")
    d = tmp_path / "copy"
    shutil.copytree(tiny_csm_dir, d)
    (d / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="no tokenizer"):
        load_csm(d, "numpy")
    (d / "config.json").unlink()
    with pytest.raises(ModelError, match="no config.json"):
        load_csm(d, "numpy")


def test_bad_config_json(tiny_csm_dir):
    (tiny_csm_dir / "config.json").write_text("{not json")
    with pytest.raises(FormatError, match="not valid JSON"):
        load_csm(tiny_csm_dir, "numpy")


@pytest.mark.parametrize("cut", [4, 20, 1000, -100])
def test_truncated_safetensors(tiny_csm_dir, cut):
    f = tiny_csm_dir / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:cut])
    with pytest.raises(FormatError):
        load_csm(tiny_csm_dir, "numpy")


def test_lying_header(tmp_path):
    f = tmp_path / "x.safetensors"
    save_safetensors(f, {"a": np.zeros((2, 3), np.float32)})
    raw = bytearray(f.read_bytes())
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + n])
    header["a"]["shape"] = [2, 4]
    blob = json.dumps(header, separators=(",", ":")).encode().ljust(n)
    f.write_bytes(bytes(raw[:8]) + blob[:n] + bytes(raw[8 + n :]))
    with pytest.raises(FormatError, match="does not match"):
        load_safetensors(f)
    raw[:8] = (10**12).to_bytes(8, "little")
    f.write_bytes(bytes(raw))
    with pytest.raises(FormatError, match="header length"):
        load_safetensors(f)


def test_missing_and_misshaped_tensor(tiny_csm_dir):
    from ccsm_core.testing.models import TINY_CONFIG

    tensors = tiny_csm_tensors(TINY_CONFIG)
    del tensors["backbone.layers.1.mlp.w2.weight"]
    save_safetensors(tiny_csm_dir / "model.safetensors", tensors)
    with pytest.raises(FormatError, match="backbone.layers.1.mlp.w2.weight.*missing"):
        load_csm(tiny_csm_dir, "numpy")
    tensors = tiny_csm_tensors(TINY_CONFIG)
    tensors["projection.weight"] = tensors["projection.weight"][:, :5]
    save_safetensors(tiny_csm_dir / "model.safetensors", tensors)
    with pytest.raises(FormatError, match="projection.weight.*shape"):
        load_csm(tiny_csm_dir, "numpy")


def test_bf16_and_f16_checkpoints_load(tiny_csm_dir):
    from ccsm_core.tensors import bf16_to_f32, f32_to_bf16

    x = np.array([1.0, -2.5, 3.14159, 1e-3], np.float32)
    np.testing.assert_allclose(bf16_to_f32(f32_to_bf16(x)), x, rtol=4e-3)
    tensors = {k: v.astype(np.float16) for k, v in tiny_csm_tensors().items()}
    save_safetensors(tiny_csm_dir / "model.safetensors", tensors)
    lm = load_csm(tiny_csm_dir, "numpy")
    assert lm.model.projection.dtype == np.float32
