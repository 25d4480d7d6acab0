"""CSM + Mimi + tokenizer in one GGUF: conversion, loading, tolerances, damaged files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from ccsm_core.cli import cli
from ccsm_core.errors import CcsmError
from ccsm_core.loading.csm import load_csm
from ccsm_core.testing.parity import forced_logits as teacher_forced

from .test_csm_parity import FIXTURE

# Documented tolerances of quantized CSM GGUFs: teacher-forced logits vs the f32 model.
QUANT_LOGIT_TOL = {"f16": 0.01, "bf16": 0.05, "q8_0": 0.1, "q4_0": 1.5}


@pytest.fixture(scope="module")
def ref():
    return np.load(FIXTURE / "reference.npz")


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    from ccsm_core.loading.csm_gguf import convert_csm

    d = tmp_path_factory.mktemp("gguf")
    return {t: convert_csm(FIXTURE, d / f"csm-{t}.gguf", t) for t in ("f32", "f16", "bf16", "q8_0", "q4_0")}


def forced_logits(path, ref) -> np.ndarray:
    """Logits of every codebook of the 10 reference frames, feeding the reference codes."""
    lm = load_csm(path, "numpy")
    return teacher_forced(lm.model, lm.tokenizer, "Hello from CSM.", 0, ref["text_frames"])


def test_f32_gguf_gives_the_same_speech(converted, cli_runner, tmp_path, ref):
    out, codes = tmp_path / "a.wav", tmp_path / "a.npy"
    res = cli_runner.invoke(
        cli,
        [
            "run",
            "Hello from CSM.",
            "--model",
            str(converted["f32"]),
            "--topk",
            "1",
            "--max-audio-ms",
            "800",
            "--no-watermark",
            "-o",
            str(out),
            "--codes-out",
            str(codes),
        ],
    )
    assert res.exit_code == 0, res.output
    np.testing.assert_array_equal(np.load(codes), ref["text_frames"])
    assert np.max(np.abs(sf.read(out, dtype="float32")[0] - ref["text_audio"])) <= 1e-4


@pytest.mark.parametrize("qtype", ["f16", "bf16", "q8_0", "q4_0"])
def test_quantized_within_documented_tolerance(converted, ref, qtype):
    base = forced_logits(FIXTURE, ref)
    np.testing.assert_array_equal(forced_logits(converted["f32"], ref), base)
    quant = forced_logits(converted[qtype], ref)
    assert np.max(np.abs(quant - base)) <= QUANT_LOGIT_TOL[qtype]
    assert np.max(np.abs(quant - base)) > 0  # really quantized


def test_inspect(converted, cli_runner):
    res = cli_runner.invoke(cli, ["inspect", str(converted["q8_0"])])
    assert res.exit_code == 0
    assert "csm.config" in res.output and "audio_head.0.weight" in res.output and "Q8_0" in res.output
    data = json.loads(cli_runner.invoke(cli, ["inspect", str(converted["q8_0"]), "--json"]).output)
    types = {t["name"]: t["type"] for t in data["tensors"]}
    assert types["backbone.layers.0.attn.q_proj.weight"] == "Q8_0"
    assert types["backbone.norm.scale"] == "F32"
    assert all(len(n) <= 63 for n in types) and any(n.startswith("mimi.") for n in types)


def _rewrite(path, dst, *, drop=None, meta=None, arch="csm"):
    from ccsm_core.formats.gguf_reader import load_gguf
    from ccsm_core.formats.gguf_writer import write_gguf

    src = load_gguf(path)
    md = {k: v for k, v in src.metadata.items() if k != "general.architecture"}
    md.update(meta or {})
    tensors = {n: t for n, t in src.items() if n != drop}
    return write_gguf(dst, md, tensors, arch)


def test_damaged_files_give_one_line_errors(converted, cli_runner, tmp_path):
    good = converted["f32"].read_bytes()
    cases = {
        "truncated.gguf": lambda p: p.write_bytes(good[: len(good) // 2]),
        "header-only.gguf": lambda p: p.write_bytes(good[:100]),
        "magic.gguf": lambda p: p.write_bytes(b"GGUX" + good[4:]),
        "missing-tensor.gguf": lambda p: _rewrite(converted["f32"], p, drop="decoder.norm.scale"),
        "bad-config.gguf": lambda p: _rewrite(converted["f32"], p, meta={"csm.config": "{not json"}),
        "other-arch.gguf": lambda p: _rewrite(converted["f32"], p, arch="llama"),
    }
    for name, make in cases.items():
        p = tmp_path / name
        make(p)
        res = cli_runner.invoke(cli, ["run", "Hi", "--model", str(p), "--codes-out", str(tmp_path / "x.npy")])
        assert res.exit_code == 2, (name, res.output)
        lines = res.output.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, res.output)
        with pytest.raises(CcsmError):
            load_csm(p, "numpy")


def test_projections_written_back_to_back(converted):
    """Each layer's q/k/v and w1/w3 follow each other in the file, so loaders fuse them into one
    product over the map without a copy (when their sizes keep the 32-byte alignment)."""
    from ccsm_core.formats.gguf_reader import load_gguf

    names = list(load_gguf(converted["q4_0"]).tensors)
    for stack in ("backbone", "decoder"):
        p = f"{stack}.layers.0."
        i = names.index(p + "attn.q_proj.weight")
        assert names[i : i + 3] == [p + "attn.q_proj.weight", p + "attn.k_proj.weight", p + "attn.v_proj.weight"]
        j = names.index(p + "mlp.w1.weight")
        assert names[j + 1] == p + "mlp.w3.weight"


def wide_checkpoint(folder, layers: int = 8, dim: int = 256, ff: int = 1024):
    """A CSM checkpoint in the original layout whose weights are spread over many tensors of
    similar size (8 wide backbone layers, a small audio vocabulary): 34 MB, the largest tensor 2 MB."""
    from ccsm_core.formats.safetensors import save_safetensors

    cfg = json.loads((FIXTURE / "config.json").read_text())
    cfg["audio_vocab_size"] = 64
    back = cfg["flavors"][cfg["backbone_flavor"]]
    back.update(num_layers=layers, embed_dim=dim, intermediate_dim=ff)
    dec = cfg["flavors"][cfg["decoder_flavor"]]
    rng = np.random.default_rng(0)
    tensors: dict[str, np.ndarray] = {}

    def stack(prefix: str, f: dict) -> None:
        d, hd = f["embed_dim"], f["embed_dim"] // f["num_heads"]
        for i in range(f["num_layers"]):
            p = f"{prefix}.layers.{i}."
            shapes = {
                "attn.q_proj.weight": (f["num_heads"] * hd, d),
                "attn.k_proj.weight": (f["num_kv_heads"] * hd, d),
                "attn.v_proj.weight": (f["num_kv_heads"] * hd, d),
                "attn.output_proj.weight": (d, f["num_heads"] * hd),
                "mlp.w1.weight": (f["intermediate_dim"], d),
                "mlp.w2.weight": (d, f["intermediate_dim"]),
                "mlp.w3.weight": (f["intermediate_dim"], d),
                "sa_norm.scale": (d,),
                "mlp_norm.scale": (d,),
            }
            tensors.update({p + k: rng.standard_normal(s, np.float32) * 0.02 for k, s in shapes.items()})
        tensors[f"{prefix}.norm.scale"] = np.ones(d, np.float32)

    stack("backbone", back)
    stack("decoder", dec)
    v, n, d, dd = cfg["audio_vocab_size"], cfg["audio_num_codebooks"], dim, dec["embed_dim"]
    for name, shape in {
        "text_embeddings.weight": (cfg["text_vocab_size"], d),
        "audio_embeddings.weight": (v * n, d),
        "projection.weight": (dd, d),
        "codebook0_head.weight": (v, d),
        "audio_head": (n - 1, dd, v),
    }.items():
        tensors[name] = rng.standard_normal(shape, np.float32) * 0.02
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(cfg))
    save_safetensors(folder / "model.safetensors", tensors)
    (folder / "tokenizer.json").write_bytes((FIXTURE / "tokenizer.json").read_bytes())
    return folder, tensors


@pytest.mark.parametrize("qtype, layout", [("f32", "original"), ("q8_0", "original"), ("q8_0", "transformers")])
def test_convert_streams_one_tensor_at_a_time(tmp_path, monkeypatch, qtype, layout):
    """Converting holds about one tensor: the traced peak stays within twice the largest tensor,
    far below the model's size (the model held at once would exceed it), and progress counts
    every tensor of a known total. The transformers layout (Mimi inside, q/k rows moved back to
    adjacent pairs) is computed one tensor at a time as well."""
    import tracemalloc

    from ccsm_core.formats.gguf_reader import load_gguf
    from ccsm_core.loading.csm_gguf import convert_csm

    folder, tensors = wide_checkpoint(tmp_path / "wide")
    size = sum(t.nbytes for t in tensors.values())
    largest = max(t.nbytes for t in tensors.values())
    del tensors
    if layout == "transformers":
        import shutil

        from tests import test_hf_csm

        for name in ("mimi.safetensors", "mimi_config.json"):
            shutil.copy(FIXTURE / name, folder / name)
        monkeypatch.setattr(test_hf_csm, "FIXTURE", folder)
        folder = test_hf_csm.write_hf_csm(tmp_path / "wide-hf")
    convert_csm(folder, tmp_path / "warm.gguf", qtype)  # imports and caches before measuring
    steps: list[tuple[str, int]] = []
    tracemalloc.start()
    try:
        out = convert_csm(
            folder, tmp_path / "wide.gguf", qtype, progress=lambda name, total: steps.append((name, total))
        )
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert size > 15 * largest and peak < 2 * largest + 1_000_000, (size, largest, peak)
    written = list(load_gguf(out).tensors)
    assert [name for name, _ in steps] == written and {total for _, total in steps} == {len(written)}
    assert "audio_head.30.weight" in written and "audio_head" not in written
