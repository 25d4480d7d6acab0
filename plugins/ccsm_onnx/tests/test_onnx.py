"""ONNX exports of a tiny Llama (the core's llama fixture, written as a transformers folder and as
ONNX graphs in each exporter's layout) give the folder's logits, generate the folder's tokens,
convert to GGUF, and fail with one clear line where the graph or file is not understood."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper, numpy_helper

from ccsm_core.cli import cli
from ccsm_core.errors import FormatError
from ccsm_core.formats.gguf_reader import load_gguf
from ccsm_core.loading.text import load_text_model
from ccsm_core.loading.weights import open_weights
from ccsm_core.testing.hf_layout import hf_tensors, write_hf_folder

sys.path.insert(0, str(Path(__file__).parent))
from export import llama_graph, save  # noqa: E402

FIXTURES = Path(__file__).resolve().parents[3] / "tests" / "fixtures" / "text-archs"
IDS = [0, 2, 3, 16, 4, 5, 6, 17, 7, 8, 9, 2]
TOKENIZER_FILES = ("config.json", "tokenizer.json", "tokenizer_config.json")


def tiny_model(tmp: Path, arch: str) -> tuple[Path, dict[str, np.ndarray], int]:
    """(the transformers folder, its tensors under transformers names, its layer count)."""
    src = load_gguf(FIXTURES / f"{arch}.gguf")
    md, t = dict(src.metadata), {k: v.numpy() for k, v in src.items() if k != "rope_freqs.weight"}
    folder = write_hf_folder(tmp / f"tiny-{arch}", md, t)
    return folder, hf_tensors(md, t), int(md[f"{arch}.block_count"])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> tuple[Path, dict[str, np.ndarray], int]:
    return tiny_model(tmp_path_factory.mktemp("hf"), "llama")


def export(model, tmp_path: Path, style: str, external: str | None = None) -> Path:
    """The model as ``style`` exports it, in a folder beside its config and tokenizer files."""
    folder, weights, layers = model
    out = tmp_path / f"onnx-{style}"
    out.mkdir()
    for name in TOKENIZER_FILES:
        shutil.copy(folder / name, out / name)
    return save(llama_graph(weights, layers, style), out / "model.onnx", external)


def logits(path: Path, backend) -> np.ndarray:
    m = load_text_model(path, backend, kv_dtype="float32").model
    out = m.forward(np.array(IDS), np.arange(len(IDS)), m.new_cache(32), all_logits=True)
    return backend.to_numpy(out)


@pytest.mark.parametrize(
    "style, external",
    [("named", None), ("scoped", None), ("positional", None), ("gemm", None), ("positional", "model.onnx_data")],
)
def test_export_gives_the_folders_logits(model, tmp_path, reference_backend, style, external):
    path = export(model, tmp_path, style, external)
    assert (path.parent / "model.onnx_data").is_file() == (external is not None)
    want = logits(model[0], reference_backend)
    np.testing.assert_allclose(logits(path, reference_backend), want, atol=1e-5, rtol=0)


@pytest.mark.parametrize("style", ["gemm", "positional", "scoped"])
def test_qwen2_biases_and_gemm(tmp_path_factory, tmp_path, reference_backend, style):
    """Qwen2's q/k/v biases (an Add after each MatMul, renamed ``onnx::Add_N`` where the names are
    positional), and Gemm weights read with ``transB=1``, give the folder's logits."""
    qwen2 = tiny_model(tmp_path_factory.mktemp("qwen2"), "qwen2")
    assert any(n.endswith("q_proj.bias") for n in qwen2[1])
    path = export(qwen2, tmp_path, style)
    assert {"blk.0.attn_q.bias", "blk.1.attn_v.bias"} <= set(open_weights(path).tensors)
    want = logits(qwen2[0], reference_backend)
    np.testing.assert_allclose(logits(path, reference_backend), want, atol=1e-5, rtol=0)


def test_exporter_names_are_renamed(model, tmp_path):
    """The renamed layouts carry no transformers name for the Linear (and, positional, norm) weights."""
    scoped = {t.name for t in onnx.load(str(export(model, tmp_path, "scoped"))).graph.initializer}
    positional = {t.name for t in onnx.load(str(export(model, tmp_path, "positional"))).graph.initializer}
    assert not any("proj" in n or "lm_head" in n for n in scoped) and "model.layers.0.input_layernorm.weight" in scoped
    assert [n for n in positional if n.startswith("model.")] == ["model.embed_tokens.weight"]


def test_generate_and_convert(model, tmp_path, reference_backend, cli_runner):
    path = export(model, tmp_path, "positional", "model.onnx_data")
    runs = []
    for source in (path, model[0]):
        args = ["generate", "hello", "--model", str(source), "--backend", "numpy", "-n", "6", "-t", "0", "--json"]
        res = cli_runner.invoke(cli, args)
        assert res.exit_code == 0, res.output
        runs.append(json.loads(res.output.strip().splitlines()[-1]))
    assert runs[0]["ids"] == runs[1]["ids"] and len(runs[0]["ids"]) > 0
    out = tmp_path / "x.gguf"
    res = cli_runner.invoke(cli, ["convert", str(path), "-o", str(out), "--type", "f32"])
    assert res.exit_code == 0, res.output
    assert load_gguf(out).metadata["general.architecture"] == "llama"
    np.testing.assert_allclose(logits(out, reference_backend), logits(model[0], reference_backend), atol=1e-5, rtol=0)


def one_line_error(cli_runner, path: Path, *fragments: str) -> None:
    res = cli_runner.invoke(cli, ["generate", "hi", "--model", str(path), "--backend", "numpy", "-n", "1"])
    assert res.exit_code == 2, res.output
    lines = [line for line in res.output.splitlines() if line.strip() and not line.startswith(("hint", "  "))]
    assert len(lines) == 1 and all(f in lines[0] for f in fragments), res.output


def test_a_conv_graph_is_refused(tmp_path, cli_runner):
    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "conv.weight")
    node = helper.make_node("Conv", ["x", "conv.weight"], ["y"], name="/conv/Conv")
    graph = helper.make_graph(
        [node],
        "conv",
        [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [w],
    )
    path = save(helper.make_model(graph), tmp_path / "conv.onnx")
    one_line_error(cli_runner, path, "no MatMul/Gemm weights", "Conv")


def test_a_fused_graph_is_refused(model, tmp_path, cli_runner):
    """Layer 0's q, k and v fused into one MatMul and a Split: the count found is named."""
    path = export(model, tmp_path, "positional")
    m = onnx.load(str(path))
    q, k, v = [n for n in m.graph.node if n.op_type == "MatMul" and n.input[1].startswith("onnx::MatMul")][:3]
    inits = {t.name: t for t in m.graph.initializer}
    fused = np.concatenate([numpy_helper.to_array(inits[n.input[1]]) for n in (q, k, v)], axis=1)
    m.graph.initializer.append(numpy_helper.from_array(fused, "onnx::MatMul_qkv"))
    at = list(m.graph.node).index(q)
    for n in (q, k, v):
        m.graph.node.remove(n)
    sizes = numpy_helper.from_array(np.array([32, 16, 16], np.int64), "qkv_sizes")
    m.graph.initializer.append(sizes)
    split = helper.make_node("Split", ["qkv", "qkv_sizes"], [q.output[0], k.output[0], v.output[0]], axis=-1)
    m.graph.node.insert(at, split)
    m.graph.node.insert(at, helper.make_node("MatMul", [q.input[0], "onnx::MatMul_qkv"], ["qkv"]))
    onnx.checker.check_model(m)
    onnx.save_model(m, str(path))
    one_line_error(cli_runner, path, "13 MatMul/Gemm weights", "2 layers", "fused QKV")


def test_not_onnx_and_no_config(model, tmp_path, cli_runner):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\xff" * 100)
    one_line_error(cli_runner, bad, "not a readable ONNX model")
    path = export(model, tmp_path, "scoped")
    (path.parent / "config.json").unlink()
    one_line_error(cli_runner, path, "no config.json beside it")


def external_entries(path: Path, **changes: str) -> None:
    m = onnx.load(str(path), load_external_data=False)
    t = next(t for t in m.graph.initializer if t.name.startswith("onnx::MatMul"))
    for entry in t.external_data:
        if entry.key in changes:
            entry.value = changes.pop(entry.key)
    for key, value in changes.items():
        t.external_data.add(key=key, value=value)
    onnx.save_model(m, str(path))


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"offset": "999999999"}, "external data at offset 999999999"),
        ({"length": "12"}, "12 bytes"),
        ({"offset": "-4"}, "is not a byte count"),
        ({"location": "../elsewhere.bin"}, "is not a file beside the model"),
        ({"location": "missing.bin"}, "external data file missing.bin is missing"),
    ],
)
def test_external_data_is_checked(model, tmp_path, changes, message):
    path = export(model, tmp_path, "positional", "model.onnx_data")
    (tmp_path / "elsewhere.bin").write_bytes(b"\0" * 4096)
    external_entries(path, **changes)
    with pytest.raises(FormatError, match=message):
        load_text_model(path, "numpy")


def test_truncated_data_file_is_refused(model, tmp_path):
    path = export(model, tmp_path, "positional", "model.onnx_data")
    data = path.parent / "model.onnx_data"
    data.write_bytes(data.read_bytes()[:-4])
    with pytest.raises(FormatError, match="truncated"):
        load_text_model(path, "numpy")


def test_bad_dims_and_types_are_refused(model, tmp_path):
    path = export(model, tmp_path, "scoped")
    m = onnx.load(str(path))
    t = next(t for t in m.graph.initializer if t.name.startswith("onnx::MatMul"))
    t.dims[0] = 0
    onnx.save_model(m, str(path))
    with pytest.raises(FormatError, match=r"has dims \[0, "):
        load_text_model(path, "numpy")
    t.dims[0] = 31  # one row short of its 32 * 32 floats
    onnx.save_model(m, str(path))
    with pytest.raises(FormatError, match="bytes for"):
        load_text_model(path, "numpy")
    t.dims[0], t.data_type = 32, onnx.TensorProto.INT32
    onnx.save_model(m, str(path))
    with pytest.raises(FormatError, match="holds INT32, not a float weight"):
        load_text_model(path, "numpy")


def test_positions_are_checked_against_config(model, tmp_path):
    """A config whose shapes the graph does not have is refused, naming the weight and its place."""
    path = export(model, tmp_path, "positional")
    cfg = json.loads((path.parent / "config.json").read_text())
    (path.parent / "config.json").write_text(json.dumps(cfg | {"intermediate_size": 48}))
    with pytest.raises(FormatError, match=r"sits where model\.layers\.0\.mlp\.gate_proj\.weight belongs"):
        load_text_model(path, "numpy")
