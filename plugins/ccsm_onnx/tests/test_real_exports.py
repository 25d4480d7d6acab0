"""Files the real exporters wrote (fixtures/, recorded by scripts/record_onnx_exports.py: a tiny
random Llama exported by torch.onnx's TorchScript and dynamo exporters and by optimum, inline and
with external data) give transformers' logits, run with ``ccsm generate`` and convert to GGUF."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest

from ccsm_core.cli import cli
from ccsm_core.errors import FormatError
from ccsm_core.formats.gguf_reader import load_gguf
from ccsm_core.loading.text import load_text_model
from ccsm_core.loading.weights import open_weights

FIXTURES = Path(__file__).parent / "fixtures"
RECORDED = sorted(p.name for p in FIXTURES.iterdir() if (p / "model.onnx").is_file())
EXPORTS = [name for name in RECORDED if name != "optimum-ort-quantized"]  # the float ones
TOLERANCE = 1e-4  # float32: transformers (torch) against ccsm's numpy backend


def reference(name: str) -> dict:
    return json.loads((FIXTURES / name / "reference.json").read_text())


def logits(path: Path, ids: list[int], backend) -> np.ndarray:
    m = load_text_model(path, backend, kv_dtype="float32").model
    out = m.forward(np.array(ids), np.arange(len(ids)), m.new_cache(32), all_logits=True)
    return backend.to_numpy(out)


def test_every_exporter_was_recorded():
    """The script's nine exports are all here, each with the versions that wrote it."""
    assert RECORDED == [
        "optimum",
        "optimum-ort-fused",
        "optimum-ort-quantized",
        "optimum-past",
        "torch-dynamo",
        "torch-dynamo-tied",
        "torch-script",
        "torch-script-external",
        "torch-script-tied",
    ]
    for name in RECORDED:
        assert {"torch", "transformers", "onnx"} <= set(reference(name)["versions"])
    external = {p.parent.name for p in FIXTURES.glob("*/model.onnx*data")}
    assert external == {"optimum-past", "torch-dynamo", "torch-dynamo-tied", "torch-script-external"}


def test_exports_rename_the_weights():
    """What the plugin must recover: the exporters do not keep the Linear weights' names."""
    for name in ("torch-script", "optimum", "torch-dynamo"):
        graph = onnx.load(str(FIXTURES / name / "model.onnx"), load_external_data=False).graph
        inits = {t.name for t in graph.initializer}
        assert not any("proj" in n or "lm_head" in n for n in inits), name


def test_tied_exports_share_their_weights():
    """What the tied fixtures hold: the five all-ones norms stored once (TorchScript passes the
    copy on through Identity nodes; dynamo reads it from each norm), and dynamo names the shared
    embedding after the head."""
    for name in ("torch-script-tied", "torch-dynamo-tied"):
        graph = onnx.load(str(FIXTURES / name / "model.onnx"), load_external_data=False).graph
        norms = [t.name for t in graph.initializer if "norm" in t.name]
        assert len(norms) == 1, (name, norms)
        readers = [n for n in graph.node if norms[0] in n.input]
        ops = {n.op_type for n in readers}
        assert ops == ({"Identity", "Mul"} if "script" in name else {"Mul"}) and len(readers) == 5, (name, ops)
    dynamo = onnx.load(str(FIXTURES / "torch-dynamo-tied" / "model.onnx"), load_external_data=False).graph
    gather = next(n for n in dynamo.node if n.op_type == "Gather" and "input_ids" in n.input)
    assert gather.input[0] == "model.lm_head.weight"


@pytest.mark.parametrize("name", EXPORTS)
def test_export_gives_transformers_logits(name, reference_backend):
    ref = reference(name)
    got = logits(FIXTURES / name / "model.onnx", ref["ids"], reference_backend)
    want = np.array(ref["logits"], np.float32)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("name", ["torch-script", "torch-dynamo", "optimum-past", "torch-dynamo-tied"])
def test_convert_to_gguf_keeps_the_logits(name, tmp_path, reference_backend, cli_runner):
    out = tmp_path / "x.gguf"
    res = cli_runner.invoke(cli, ["convert", str(FIXTURES / name / "model.onnx"), "-o", str(out), "--type", "f32"])
    assert res.exit_code == 0, res.output
    assert load_gguf(out).metadata["general.architecture"] == "llama"
    ref = reference(name)
    want = np.array(ref["logits"], np.float32)
    np.testing.assert_allclose(logits(out, ref["ids"], reference_backend), want, atol=TOLERANCE, rtol=0)


def test_generate_from_an_export_and_its_gguf(tmp_path, cli_runner):
    """``ccsm generate`` reads the optimum export (tokenizer and all) and its GGUF alike."""
    path = FIXTURES / "optimum" / "model.onnx"
    gguf = tmp_path / "x.gguf"
    assert cli_runner.invoke(cli, ["convert", str(path), "-o", str(gguf), "--type", "f32"]).exit_code == 0
    runs = []
    for source in (path, gguf):
        args = ["generate", "hello", "--model", str(source), "--backend", "numpy", "-n", "6", "-t", "0", "--json"]
        res = cli_runner.invoke(cli, args)
        assert res.exit_code == 0, res.output
        runs.append(json.loads(res.output.strip().splitlines()[-1]))
    assert runs[0]["ids"] == runs[1]["ids"] and len(runs[0]["ids"]) > 0


def test_a_missing_external_data_file_is_named(tmp_path):
    """The dynamo exporter's ``model.onnx.data`` left behind: the file it needs is named."""
    folder = tmp_path / "torch-dynamo"
    shutil.copytree(FIXTURES / "torch-dynamo", folder)
    (folder / "model.onnx.data").unlink()
    with pytest.raises(FormatError, match=r"external data file model\.onnx\.data is missing"):
        load_text_model(folder / "model.onnx", "numpy")


def test_names_under_a_wrapper_prefix_are_read(tmp_path):
    """torch.onnx of a module holding the model as ``self.model`` names the norms
    ``model.model.layers.0.input_layernorm.weight``: the name (less the prefix) places the weight,
    ahead of its position. Two norms whose names are swapped land where their names say."""
    folder = tmp_path / "torch-script"
    shutil.copytree(FIXTURES / "torch-script", folder)
    m = onnx.load(str(folder / "model.onnx"))
    a, b = (f"model.model.layers.{i}.input_layernorm.weight" for i in (0, 1))
    swap = {a: b, b: a}
    for t in m.graph.initializer:
        t.name = swap.get(t.name, t.name)
    for node in m.graph.node:
        node.input[:] = [swap.get(n, n) for n in node.input]
    onnx.save_model(m, str(folder / "model.onnx"))
    data = {t.name: onnx.numpy_helper.to_array(t) for t in m.graph.initializer}
    tensors = open_weights(folder / "model.onnx").tensors
    for i, name in enumerate((a, b)):
        np.testing.assert_array_equal(np.asarray(tensors[f"blk.{i}.attn_norm.weight"].data), data[name])


def test_fused_norms_are_read():
    """onnxruntime's optimizer fuses the RMSNorms: no norm Mul reads a weight any more."""
    graph = onnx.load(str(FIXTURES / "optimum-ort-fused" / "model.onnx")).graph
    norms = {t.name for t in graph.initializer if "norm" in t.name}
    readers = {n.op_type for n in graph.node if norms & set(n.input)}
    assert len(norms) == 5 and readers == {"SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization"}


def test_a_quantized_export_is_refused(cli_runner):
    """onnxruntime's dynamic int8 quantization: the ops found are named in one line."""
    path = FIXTURES / "optimum-ort-quantized" / "model.onnx"
    res = cli_runner.invoke(cli, ["generate", "hi", "--model", str(path), "--backend", "numpy", "-n", "1"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "a quantized graph (DequantizeLinear, DynamicQuantizeLinear, MatMulInteger)" in lines[0]
    assert "hint: convert the float export" in lines[0]
