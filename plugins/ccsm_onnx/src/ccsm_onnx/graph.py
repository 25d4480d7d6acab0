"""How a graph uses its initializers: which node consumes each one (subgraphs included, in graph
order), and in which layout a weight is stored (a MatMul's right operand is ``[in, out]``, the
transpose of the Linear weight; a Gemm's with ``transB=1`` or one behind a Transpose is not)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

GRAPH, GRAPHS = 5, 10  # AttributeProto.GRAPH, AttributeProto.GRAPHS


@dataclass(frozen=True)
class Use:
    """One use of an initializer: the node that reads it (through a Transpose, the node after)."""

    node: Any
    index: int  # which input of ``node`` it is
    transposed: bool  # stored as [in, out]: the Linear weight is its transpose


def walk(graph: Any) -> Iterator[Any]:
    """Every node of ``graph`` and of its subgraphs (If/Loop bodies), in graph order."""
    for node in graph.node:
        yield node
        for attr in node.attribute:
            if attr.type == GRAPH:
                yield from walk(attr.g)
            elif attr.type == GRAPHS:
                for sub in attr.graphs:
                    yield from walk(sub)


def attribute(node: Any, name: str, default: Any = None) -> Any:
    """An int or ints attribute of a node."""
    for attr in node.attribute:
        if attr.name == name:
            return list(attr.ints) if attr.ints else attr.i
    return default


def first_uses(nodes: list[Any], names: set[str]) -> dict[str, Use]:
    """For each initializer in ``names``, its first use in ``nodes``, in the order of those
    uses; a ``Transpose`` (perm
    ``[1, 0]``) in between is looked through to the MatMul/Gemm that reads its output."""
    readers: dict[str, list[tuple[Any, int]]] = {}
    order: dict[str, int] = {}
    for position, node in enumerate(nodes):
        for i, name in enumerate(node.input):
            readers.setdefault(name, []).append((node, i))
            order.setdefault(name, position)
    uses: dict[str, Use] = {}
    for name in sorted(names & set(order), key=order.__getitem__):  # in the order the graph reads them
        found = readers.get(name)
        if not found:
            continue
        node, index = found[0]
        if node.op_type == "Transpose" and attribute(node, "perm", [1, 0]) == [1, 0] and node.output:
            after = readers.get(node.output[0])
            if after and after[0][0].op_type in ("MatMul", "Gemm") and after[0][1] == 1:
                inner = after[0][0]
                flip = not (inner.op_type == "Gemm" and attribute(inner, "transB", 0) == 1)
                uses[name] = Use(inner, 1, not flip)
                continue
        transposed = node.op_type == "MatMul" or (node.op_type == "Gemm" and attribute(node, "transB", 0) != 1)
        uses[name] = Use(node, index, transposed and index == 1)
    return uses


def unshare(nodes: list[Any], names: set[str]) -> tuple[list[Any], dict[str, str]]:
    """``nodes`` with each initializer read by one node only, and the aliases that takes.

    The exporters store identical weights once (an untrained model's all-ones norms): torch.onnx
    (TorchScript) reads the copy through ``Identity`` nodes, the dynamo exporter from several
    nodes directly. Identities of an initializer are dropped and their readers read it; the
    second and later readers read an alias (``name#1``) instead, so each reader names a weight
    of its own. Returns the nodes left and alias -> initializer; the nodes' inputs are rewritten."""
    source: dict[str, str] = {}  # an Identity's output -> the initializer it passes on
    readers: dict[str, int] = {}
    aliases: dict[str, str] = {}
    kept = []
    for node in nodes:
        if node.op_type == "Identity" and len(node.input) == 1 and len(node.output) == 1:
            real = source.get(node.input[0], node.input[0])
            if real in names:
                source[node.output[0]] = real
                continue
        for i, name in enumerate(node.input):
            real = source.get(name, name)
            if real not in names:
                continue
            k = readers[real] = readers.get(real, -1) + 1
            if k:
                aliases[f"{real}#{k}"] = real
            node.input[i] = f"{real}#{k}" if k else real
        kept.append(node)
    return kept, aliases


def is_linear(use: Use) -> bool:
    """Whether the use is the weight operand of a MatMul or Gemm."""
    return use.node.op_type in ("MatMul", "Gemm") and use.index == 1


def scope(node: Any) -> str | None:
    """The module path in a torch.onnx node name (``/model/layers.0/self_attn/q_proj/MatMul`` ->
    ``model.layers.0.self_attn.q_proj``), or None when the name has no scope."""
    name = str(node.name)
    if not name.startswith("/") or name.count("/") < 2:
        return None
    return ".".join(name.strip("/").split("/")[:-1])
