"""Transformers parameter names for a Llama-family graph's initializers.

An initializer that already carries a parameter name (optimum, or torch.onnx without constant
folding) keeps it. One the exporter renamed (``onnx::MatMul_123``: a Linear weight transposed
by constant folding; ``onnx::Mul_45``: a norm weight) is named from the scope in its consumer's
node name (``/model/layers.0/self_attn/q_proj/MatMul``) where the exporter wrote one, else from
its position: in a Llama decoder the weighted MatMuls come in the order q, k, v, o, gate, up,
down per layer, then the head; the RMSNorm weights as input, post-attention per layer, then the
final norm. Positions are checked against the config's shapes and against the graph (q, k and v
read one input; gate and up another) before any name is given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ccsm_core.errors import FormatError

from .graph import Use, is_linear, scope

# a parameter or module path, after any prefix a wrapper module adds (``model.model.norm.weight``
# where the exported module holds the LlamaForCausalLM as ``self.model``)
PARAM = re.compile(
    r"(?:^|\.)(?P<path>(?:model\.layers\.\d+\.[\w.]+|model\.embed_tokens|model\.norm|lm_head)\.(?:weight|bias))$"
)
MODULE = re.compile(
    r"(?:^|\.)(?P<path>model\.layers\.\d+\.(?:self_attn\.[qkvo]_proj|mlp\.(?:gate|up|down)_proj|\w+_layernorm)"
    r"|model\.norm|model\.embed_tokens|lm_head)$"
)
LINEAR_ROLES: tuple[str, ...] = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj")
LINEAR_ROLES += ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
NORM_ROLES = ("input_layernorm", "post_attention_layernorm")
FUSED_NORMS = ("SimplifiedLayerNormalization", "SkipSimplifiedLayerNormalization", "RMSNormalization")


@dataclass(frozen=True)
class Dims:
    """The shapes a Llama-family config implies."""

    layers: int
    dim: int
    heads: int
    kv_heads: int
    head_dim: int
    ff: int
    vocab: int

    def linear_shape(self, role: str) -> tuple[int, int]:
        """``[out, in]`` of a Linear weight of one layer (``lm_head`` too)."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        shapes = {"q_proj": (q, self.dim), "k_proj": (kv, self.dim), "v_proj": (kv, self.dim)}
        shapes |= {"o_proj": (self.dim, q), "gate_proj": (self.ff, self.dim), "up_proj": (self.ff, self.dim)}
        shapes |= {"down_proj": (self.dim, self.ff), "lm_head": (self.vocab, self.dim)}
        return shapes[role.rsplit(".", 1)[-1]]


def recover_names(
    uses: Mapping[str, Use], shapes: Mapping[str, tuple[int, ...]], dims: Dims, where: str
) -> dict[str, str]:
    """Initializer name -> transformers parameter name, for every initializer that is a weight."""
    names: dict[str, str] = {}
    linear = [n for n, u in uses.items() if is_linear(u)]
    table = (dims.vocab, dims.dim)
    embed = [n for n, u in uses.items() if u.node.op_type == "Gather" and u.index == 0 and shapes[n] == table]
    norms = [n for n, u in uses.items() if _is_norm(u, shapes[n], dims)]
    for n in embed:  # whatever its name: a tied export may call it lm_head.weight
        names[n] = "model.embed_tokens.weight"
    _name_positions(linear, uses, names, lambda: _linear_slots(linear, uses, shapes, dims, where), where)
    _name_positions(norms, uses, names, lambda: _norm_slots(dims), where)
    for n, u in uses.items():  # biases: an Add after a named Linear
        if n not in names and u.node.op_type == "Add" and len(shapes[n]) == 1:
            owner = _linear_of(u.node, linear, uses, names)
            if owner is not None:
                names[n] = owner[: -len("weight")] + "bias"
        elif n not in names and param_name(n) and not n.endswith("rotary_emb.inv_freq"):
            names[n] = str(param_name(n))
    seen: dict[str, str] = {}
    for n, param in names.items():
        if param in seen:
            raise FormatError(f"{where}: initializers {seen[param]!r} and {n!r} both map to {param}", "re-export it")
        seen[param] = n
    return names


def _is_norm(use: Use, shape: tuple[int, ...], dims: Dims) -> bool:
    """A Mul by a vector of the model's width, or the scale of a fused RMSNorm."""
    op = use.node.op_type
    return shape == (dims.dim,) and (op == "Mul" or (op in FUSED_NORMS and use.index == 1))


def _scoped(name: str, use: Use, kind: str) -> str | None:
    """The parameter name from the initializer's own name or its consumer's scope."""
    param = param_name(name)
    if param is not None:
        return param
    module = MODULE.search(scope(use.node) or "")
    return f"{module['path']}.{kind}" if module else None


def param_name(name: str) -> str | None:
    """The transformers parameter name an initializer carries, less a wrapper's prefix."""
    found = PARAM.search(name)
    return found["path"] if found else None


def _linear_slots(
    linear: list[str], uses: Mapping[str, Use], shapes: Mapping[str, tuple[int, ...]], dims: Dims, where: str
) -> list[str]:
    """The parameter name of each weighted MatMul by position, checked against the graph."""
    slots = [f"model.layers.{i}.{role}.weight" for i in range(dims.layers) for role in LINEAR_ROLES]
    if len(linear) == len(slots) + 1:
        slots.append("lm_head.weight")
    if len(linear) != len(slots):
        raise FormatError(
            f"{where}: {len(linear)} MatMul/Gemm weights, but a Llama decoder of {dims.layers} layers has "
            f"{len(slots)} (q, k, v, o, gate, up, down per layer) or {len(slots) + 1} with its head",
            "only unfused Llama-family graphs are understood (no fused QKV or optimized attention)",
        )
    for i in range(dims.layers):
        q, k, v, _, gate, up, _ = (uses[n].node for n in linear[7 * i : 7 * i + 7])
        if not q.input[0] == k.input[0] == v.input[0] or gate.input[0] != up.input[0]:
            raise FormatError(
                f"{where}: the MatMuls of layer {i} do not read their inputs as q/k/v and gate/up do",
                "only unfused Llama-family graphs are understood",
            )
    for n, slot in zip(linear, slots):
        got = oriented(shapes[n], uses[n])
        if got != dims.linear_shape(slot[: -len(".weight")]):
            raise FormatError(
                f"{where}: {n!r} of shape {list(got)} sits where {slot} belongs, "
                f"which is {list(dims.linear_shape(slot[: -len('.weight')]))} by config.json",
                "the graph is not the Llama-family model config.json describes",
            )
    return slots


def oriented(shape: tuple[int, ...], use: Use) -> tuple[int, ...]:
    """The shape of a weight in torch's ``[out, in]`` layout."""
    return tuple(reversed(shape)) if use.transposed else tuple(shape)


def _norm_slots(dims: Dims) -> list[str]:
    slots = [f"model.layers.{i}.{role}.weight" for i in range(dims.layers) for role in NORM_ROLES]
    return [*slots, "model.norm.weight"]


def _name_positions(
    found: list[str], uses: Mapping[str, Use], names: dict[str, str], slots_of: Callable[[], list[str]], where: str
) -> None:
    """Name each initializer of ``found``: from its name or scope, else its slot; named ones
    must agree with their slot when the counts match (the graph is read as the order says)."""
    scoped = {n: _scoped(n, uses[n], "weight") for n in found}
    if all(scoped.values()):
        names.update({n: str(s) for n, s in scoped.items()})
        return
    slots = slots_of()
    if len(found) != len(slots):
        kinds = ", ".join(sorted({uses[n].node.op_type for n in found})) or "none"
        raise FormatError(
            f"{where}: {len(found)} unnamed weights read by {kinds} where {len(slots)} were expected",
            "only Llama-family graphs are understood",
        )
    for n, slot in zip(found, slots):
        if scoped[n] is not None and scoped[n] != slot:
            raise FormatError(f"{where}: {n!r} is named {scoped[n]} but sits where {slot} belongs", "re-export it")
        names[n] = slot


def _linear_of(add: Any, linear: list[str], uses: Mapping[str, Use], names: Mapping[str, str]) -> str | None:
    """The parameter name of the Linear weight whose MatMul output ``add`` adds to."""
    for n in linear:
        if uses[n].node.output and uses[n].node.output[0] in add.input and n in names:
            return names[n]
    return None
