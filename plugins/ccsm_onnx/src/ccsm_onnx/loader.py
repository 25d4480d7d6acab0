"""An ONNX export of a Llama-family text model as the GGUF-named weights and metadata ccsm runs:
the initializers under transformers names (`names`), in torch's layout, read through the
transformers text path (``config.json`` and tokenizer files beside the ``.onnx`` file, as
optimum writes the folder), so the file and its folder compute the same thing."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from ccsm_core.errors import FormatError
from ccsm_core.tensors import TensorData, WeightSource

from .graph import first_uses, is_linear, unshare, walk
from .initializers import Initializers
from .names import Dims, recover_names

MAX_PROTO = (1 << 31) - 1  # protobuf's limit: larger exports keep their weights in external data
MAX_COUNT = 1 << 31
# onnxruntime's quantized weights: int8/int4 MatMuls and the (de)quantizing ops around them
QUANTIZED_OPS = {"MatMulInteger", "MatMulNBits", "QLinearMatMul", "DequantizeLinear", "QuantizeLinear"}
QUANTIZED_OPS |= {"DynamicQuantizeLinear", "DynamicQuantizeMatMul", "GatherBlockQuantized", "MatMulIntegerToFloat"}


def load_onnx(path: str | Path, *, validate: bool = True) -> WeightSource:
    """The text model exported to ``path`` (weights checked; ``validate`` is always on)."""
    from ccsm_core.loading.hf_folder import read_json
    from ccsm_core.loading.hf_text import open_hf_text, text_config

    p = Path(path).expanduser()
    where = str(p)
    graph = read_graph(p).graph
    inits = Initializers(p, {t.name: t for t in graph.initializer})
    nodes, aliases = unshare(list(walk(graph)), set(inits.protos))
    quantized = sorted({n.op_type for n in nodes} & QUANTIZED_OPS)
    if quantized:
        raise FormatError(
            f"{where}: a quantized graph ({', '.join(quantized)}): its weights are not float",
            "convert the float export (before onnxruntime's quantization); ccsm convert --type q8_0 quantizes",
        )
    inits.protos |= {alias: inits.protos[real] for alias, real in aliases.items()}
    # float initializers, and any a MatMul/Gemm reads as its weight (its type is checked when read)
    found = first_uses(nodes, set(inits.protos))
    uses = {n: u for n, u in found.items() if inits.is_float(n) or is_linear(u)}
    if not any(is_linear(u) for u in uses.values()):
        ops = sorted({u.node.op_type for u in uses.values()}) or ["no node"]
        raise FormatError(
            f"{where}: no MatMul/Gemm weights; its float initializers feed {', '.join(ops)}",
            "only Llama-family text models (torch.onnx or optimum exports) are understood",
        )
    if not (p.parent / "config.json").is_file():
        raise FormatError(
            f"{where}: no config.json beside it",
            "keep the export in the folder optimum writes (model.onnx, config.json, tokenizer files)",
        )
    cfg = text_config(read_json(p.parent / "config.json", "config"))
    shapes = {n: inits.shape(n) for n in uses}
    names = recover_names(uses, shapes, config_dims(cfg, str(p.parent / "config.json")), where)
    tensors: dict[str, TensorData] = {}
    for n, param in names.items():
        t = inits.tensor(n)
        if uses[n].transposed and len(t.shape) == 2:
            t = TensorData(param, (t.shape[1], t.shape[0]), t.dtype, t.data.T)
        tensors[param] = TensorData(param, t.shape, t.dtype, t.data)
    hf = open_hf_text(p.parent, WeightSource(p, tensors, {}, "onnx"))
    hf.metadata["general.name"] = p.parent.name
    # the GGUF-named tensors are computed one at a time when asked for (a Mapping like the dict)
    return WeightSource(p, cast(dict, hf.tensors), hf.metadata, "onnx")


def read_graph(p: Path) -> Any:
    """The ONNX model proto of ``p`` without its external data, or a `FormatError`."""
    import onnx

    try:
        size = p.stat().st_size
    except OSError as e:
        raise FormatError(f"{p}: cannot read ({e.strerror or e})", "check the file") from None
    if size > MAX_PROTO:
        raise FormatError(f"{p}: {size} bytes, over protobuf's 2 GiB", "export with external data (optimum does)")
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # protobuf raises DecodeError and others on a damaged file
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise FormatError(f"{p}: not a readable ONNX model ({first})", "re-export it") from None
    if not model.HasField("graph") or not model.graph.node:
        raise FormatError(f"{p}: not an ONNX model with a graph", "re-export it")
    return model


def config_dims(cfg: dict[str, Any], where: str) -> Dims:
    """The shapes ``config.json`` implies, each a positive count."""

    def count(key: str, default: Any = None) -> int:
        value = cfg.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not 0 < value <= MAX_COUNT:
            raise FormatError(f"{where}: {key} = {value!r} is not a count", "restore the model's config.json")
        return value

    heads, dim = count("num_attention_heads"), count("hidden_size")
    head_dim = cfg.get("head_dim") or dim // heads
    cfg = {**cfg, "head_dim": head_dim}
    return Dims(
        layers=count("num_hidden_layers"),
        dim=dim,
        heads=heads,
        kv_heads=count("num_key_value_heads", heads),
        head_dim=count("head_dim"),
        ff=count("intermediate_size"),
        vocab=count("vocab_size"),
    )
