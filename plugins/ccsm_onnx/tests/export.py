"""Tiny Llama decoders written as ONNX graphs with ``onnx.helper`` (no PyTorch), in the layouts
the exporters write: ``named`` (optimum: transformers names, Linear weights behind a
Transpose), ``scoped`` (torch.onnx with constant folding: ``onnx::MatMul_N`` weights stored
``[in, out]``, node names carrying the module scope), ``positional`` (the same, with node
names and norm weights renamed so only the graph's order tells them apart) and ``gemm`` (Gemm
nodes with ``transB=1`` over ``onnx::Gemm_N`` weights stored ``[out, in]``, positional too).
Linear biases follow their MatMul as an ``Add``."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

PROJ = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")


class Builder:
    """Nodes and initializers of one graph, named as one exporter style names them."""

    def __init__(self, weights: Mapping[str, np.ndarray], style: str) -> None:
        self.weights, self.style = weights, style
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.count = 0

    def fresh(self, op: str) -> str:
        self.count += 1
        return f"{op}_{self.count}"

    def node(self, op: str, inputs: list[str], module: str = "", **attrs: object) -> str:
        out = self.fresh("/" + module.replace(".", "/") + "/" + op + "_output" if module else op + "_output")
        name = f"/{module.replace('.', '/')}/{op}" if module and self.style in ("named", "scoped") else self.fresh(op)
        self.nodes.append(helper.make_node(op, inputs, [out], name=name, **attrs))
        return out

    def init(self, name: str, value: np.ndarray) -> str:
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def linear(self, x: str, module: str) -> str:
        w = self.weights[module + ".weight"]
        if self.style == "named":
            wt = self.node("Transpose", [self.init(module + ".weight", w)], module, perm=[1, 0])
            y = self.node("MatMul", [x, wt], module)
        elif self.style == "gemm":  # stored [out, in], read transposed by the Gemm
            y = self.node("Gemm", [x, self.init(self.fresh("onnx::Gemm"), w)], module, transB=1)
        else:
            y = self.node("MatMul", [x, self.init(self.fresh("onnx::MatMul"), w.T)], module)
        bias = self.weights.get(module + ".bias")
        if bias is None:
            return y
        name = module + ".bias" if self.style == "named" else self.fresh("onnx::Add")
        return self.node("Add", [y, self.init(name, bias)], module)

    def norm(self, x: str, module: str) -> str:
        sq = self.node("Mul", [x, x], module)
        ms = self.node("ReduceMean", [sq], module, keepdims=1)
        eps = self.init(self.fresh("onnx::Add"), np.array(1e-6, np.float32))
        rms = self.node("Sqrt", [self.node("Add", [ms, eps], module)], module)
        w = module + ".weight" if self.style in ("named", "scoped") else self.fresh("onnx::Mul")
        scaled = self.node("Div", [x, rms], module)
        return self.node("Mul", [scaled, self.init(w, self.weights[module + ".weight"])], module)


def llama_graph(weights: Mapping[str, np.ndarray], layers: int, style: str) -> onnx.ModelProto:
    """A Llama decoder over ``weights`` (transformers names) as ``style`` writes it."""
    b = Builder(weights, style)
    embed = b.init("model.embed_tokens.weight", weights["model.embed_tokens.weight"])
    x = b.node("Gather", [embed, "input_ids"], "model.embed_tokens")
    cos = b.init(b.fresh("onnx::Gather"), np.ones((64, 8), np.float32))  # a rotary cache: not a weight
    rot = b.node("Gather", [cos, "position_ids"], "model.rotary_emb")
    for i in range(layers):
        p = f"model.layers.{i}"
        h = b.norm(x, f"{p}.input_layernorm")
        q, k, v = (b.linear(h, f"{p}.{proj}") for proj in PROJ)
        k = b.node("Transpose", [b.node("Mul", [k, rot], f"{p}.self_attn")], f"{p}.self_attn", perm=[0, 2, 1])
        probs = b.node("Softmax", [b.node("MatMul", [q, k], f"{p}.self_attn")], f"{p}.self_attn", axis=-1)
        o = b.linear(b.node("MatMul", [probs, v], f"{p}.self_attn"), f"{p}.self_attn.o_proj")
        x = b.node("Add", [x, o], p)
        h = b.norm(x, f"{p}.post_attention_layernorm")
        gate, up = b.linear(h, f"{p}.mlp.gate_proj"), b.linear(h, f"{p}.mlp.up_proj")
        act = b.node("Mul", [gate, b.node("Sigmoid", [gate], f"{p}.mlp.act_fn")], f"{p}.mlp.act_fn")
        x = b.node("Add", [x, b.linear(b.node("Mul", [act, up], f"{p}.mlp"), f"{p}.mlp.down_proj")], p)
    logits = b.linear(b.norm(x, "model.norm"), "lm_head")
    graph = helper.make_graph(
        b.nodes,
        "tiny-llama",
        [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"]) for n in ("input_ids", "position_ids")],
        [helper.make_tensor_value_info(logits, TensorProto.FLOAT, ["batch", "seq", "vocab"])],
        b.inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny")
    onnx.checker.check_model(model)
    return model


def save(model: onnx.ModelProto, path: Path, external: str | None = None) -> Path:
    """Write ``model`` to ``path``; with ``external``, every initializer's data into that file."""
    if external is None:
        onnx.save_model(model, str(path))
    else:
        onnx.save_model(
            model,
            str(path),
            save_as_external_data=True,
            all_tensors_to_one_file=True,
            location=external,
            size_threshold=0,
        )
    return path
