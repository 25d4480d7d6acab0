"""A transformers text model folder seen as the GGUF llama.cpp's converter would write from it:
GGUF metadata from ``config.json`` and the tokenizer files, and the tensors under GGUF names,
computed lazily one at a time (q/k rows permuted back to adjacent RoPE pairs for the
architectures llama.cpp runs that way, Gemma's norms stored with their +1, Llama 3's RoPE
scaling as ``rope_freqs.weight``, Phi-3's LongRoPE as ``rope_factors_long/short.weight``, YaRN
as ``rope.scaling.*`` keys).

The same view serves ``ccsm generate --model FOLDER`` and ``ccsm convert FOLDER``, so a folder
and the GGUF converted from it compute the same thing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import schema
from ..errors import FormatError, ModelError
from ..models.text import arch_names, get_arch
from ..models.text.arch import TextArch
from ..tensors import PLAIN_DTYPES, TensorData, WeightSource, float32_values
from .hf_folder import config_count as _count
from .hf_folder import config_real as _real
from .hf_folder import hf_config, open_shards, read_json

# per-layer transformers names -> GGUF names (the layer prefix model.layers.{i}. -> blk.{i}.)
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "pre_feedforward_layernorm": "ffn_norm",
    "post_feedforward_layernorm": "post_ffw_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "self_attn.qkv_proj": "attn_qkv",
    "self_attn.q_norm": "attn_q_norm",
    "self_attn.k_norm": "attn_k_norm",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "mlp.gate_up_proj": "ffn_up",
}
TOP_NAMES = {"model.embed_tokens": "token_embd", "model.norm": "output_norm", "lm_head": "output"}
# prefixes of multimodal checkpoints whose text model is converted alone
TEXT_PREFIXES = (("model.language_model.", "model."), ("language_model.model.", "model."), ("language_model.", ""))
SKIPPED = re.compile(
    r"^(vision_tower|vision_model|multi_modal_projector|model\.vision_tower|model\.multi_modal_projector)\."
)
MAX_VOCAB = 1 << 24  # tokens of a vocabulary (the tokenizer lists them all)
PERMUTED = ("llama", "mistral3", "smollm3")  # llama.cpp runs these with RoPE on adjacent pairs


def find_text_arch(config: Mapping[str, Any], where: str) -> TextArch:
    """The architecture whose ``hf_names`` include the config's ``model_type``."""
    model_type = config.get("model_type")
    for name in arch_names():
        arch = get_arch(name)
        if model_type in arch.hf_names:
            return arch
    known = sorted(n for a in arch_names() for n in get_arch(a).hf_names)
    raise ModelError(
        f"{where}: transformers model type {model_type!r} is not supported", f"supported: {', '.join(known)}"
    )


def text_config(config: dict[str, Any]) -> dict[str, Any]:
    """The text part of a config (``text_config`` of multimodal models, else the config itself)."""
    inner = config.get("text_config")
    if isinstance(inner, dict) and "model_type" in inner:
        return {**{k: v for k, v in config.items() if k != "text_config"}, **inner}
    return config


@dataclass
class HfText:
    """A transformers text model as GGUF metadata and lazily computed GGUF-named tensors."""

    folder: Path
    arch: TextArch
    metadata: dict[str, Any]
    tensors: LazyTensors


class LazyTensors(Mapping[str, Any]):
    """GGUF name -> tensor, each computed from the source tensors when asked for."""

    def __init__(self, makers: dict[str, tuple[tuple[int, ...], Callable[[], Any]]]) -> None:
        self.makers = makers

    def __getitem__(self, name: str) -> Any:
        return self.makers[name][1]()

    def __iter__(self) -> Iterator[str]:
        return iter(self.makers)

    def __len__(self) -> int:
        return len(self.makers)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.makers[name][0]


def open_hf_text(folder: str | Path, source: WeightSource | None = None) -> HfText:
    """The transformers text model in ``folder`` (config, shards, tokenizer), validated.
    ``source``: its weights under transformers names when they are not the folder's safetensors
    (a format plugin's file, such as an ONNX export beside ``config.json``)."""
    from .hf_tokenizer import tokenizer_metadata

    p = Path(folder).expanduser()
    raw = hf_config(p) if source is None else read_json(p / "config.json", "config")
    if raw is None:
        raise ModelError(f"{p} is not a transformers model folder", "it needs config.json and model.safetensors")
    cfg = text_config(raw)
    where = str(p / "config.json")
    arch = find_text_arch(cfg, where)
    md, dims = _metadata(cfg, arch, where)
    source = open_shards(p) if source is None else source
    tensors = _tensors(source, arch, cfg, dims, where)
    vocab = tensors.shape("token_embd.weight")[0]
    if vocab != dims["vocab"]:
        raise FormatError(f"{where}: vocab_size {dims['vocab']} but the embedding has {vocab} rows", "the files differ")
    embedding = tuple(tensors.shape("token_embd.weight"))
    schema.count(vocab, "vocab_size", where, high=MAX_VOCAB, hint="restore config.json")  # tokens are listed one by one
    if embedding != (vocab, dims["dim"]):
        raise FormatError(
            f"{where}: the embedding has shape {list(embedding)}, expected [{vocab}, {dims['dim']}]", "the files differ"
        )
    md.update(tokenizer_metadata(p, cfg, vocab, arch.name))
    md["general.name"] = p.name
    return HfText(p, arch, md, tensors)


def _rope(cfg: Mapping[str, Any]) -> tuple[dict[str, Any], float | None]:
    """(the RoPE scaling parameters, rope_theta) from ``rope_scaling`` or ``rope_parameters``."""
    params = cfg.get("rope_parameters") or cfg.get("rope_scaling") or {}
    if not isinstance(params, dict):
        params = {}
    theta = cfg.get("rope_theta", params.get("rope_theta"))
    return params, theta


def _metadata(cfg: dict[str, Any], arch: TextArch, where: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """GGUF metadata of the model's shape, as llama.cpp's converter writes it; and the dims."""
    a = arch.name
    heads = _count(cfg, "num_attention_heads", where)
    dim = _count(cfg, "hidden_size", where)
    kv = _count(cfg, "num_key_value_heads", where, heads)
    head_dim = cfg.get("head_dim") or dim // heads
    head_dim = _count({"head_dim": head_dim}, "head_dim", where)
    layers = _count(cfg, "num_hidden_layers", where)
    if heads % kv or head_dim % 2 or (cfg.get("head_dim") is None and dim % heads):
        raise FormatError(f"{where}: {heads} heads, {kv} KV heads, width {dim} do not fit", "restore config.json")
    dims: dict[str, Any] = {"heads": heads, "kv": kv, "head_dim": head_dim, "dim": dim, "layers": layers}
    dims["vocab"] = _count(cfg, "vocab_size", where)
    md: dict[str, Any] = {
        "general.architecture": a,
        f"{a}.block_count": layers,
        f"{a}.context_length": _count(cfg, "max_position_embeddings", where, 4096),
        f"{a}.embedding_length": dim,
        f"{a}.feed_forward_length": _count(cfg, "intermediate_size", where),
        f"{a}.attention.head_count": heads,
        f"{a}.attention.head_count_kv": kv,
        f"{a}.attention.layer_norm_rms_epsilon": _real(cfg, "rms_norm_eps", where, 1e-6),
    }
    params, theta = _rope(cfg)
    md[f"{a}.rope.freq_base"] = _real({"rope_theta": theta}, "rope_theta", where, 10000.0) if theta else 10000.0
    if a in ("llama", "mistral3", "smollm3"):
        md[f"{a}.vocab_size"] = dims["vocab"]
        md[f"{a}.rope.dimension_count"] = head_dim
    if cfg.get("head_dim") is not None and head_dim != dim // heads or a in ("gemma", "gemma3", "qwen3"):
        md[f"{a}.attention.key_length"] = md[f"{a}.attention.value_length"] = head_dim
    if schema.real(cfg.get("partial_rotary_factor", 1.0), "partial_rotary_factor", where) != 1.0:
        raise FormatError(f"{where}: partial rotary embeddings are not supported", "only whole-head RoPE")
    md.update(_rope_scaling(cfg, params, arch, md[f"{a}.context_length"], dims, where))
    for key in ("final_logit_softcapping", "attn_logit_softcapping"):
        if cfg.get(key) is not None:
            raise FormatError(f"{where}: {key} is not supported", "no softcapping in the supported architectures")
    if a == "gemma3":
        md["gemma3.attention.sliding_window"] = _count(cfg, "sliding_window", where)
        local = cfg.get("rope_local_base_freq", 10000.0)
        if local != 10000.0:
            md["gemma3.rope.freq_base_swa"] = _real(cfg, "rope_local_base_freq", where)
        layer_types = cfg.get("layer_types")
        if isinstance(layer_types, list):
            flags = [t == "sliding_attention" for t in layer_types]
            from ..models.text.gemma3 import PATTERN, sliding_layers

            if len(flags) != layers:
                raise FormatError(
                    f"{where}: layer_types has {len(flags)} entries for {layers} layers",
                    "give layer_types in config.json one entry per layer",
                )
            if tuple(i for i, f in enumerate(flags) if f) != sliding_layers(layers, PATTERN):
                md["gemma3.attention.sliding_window_pattern"] = flags
        scalar = cfg.get("query_pre_attn_scalar", head_dim)
        if scalar != head_dim and not (layers == 62 and scalar == dim // heads):
            raise FormatError(f"{where}: query_pre_attn_scalar {scalar} is not supported", "llama.cpp uses head_dim")
    if a == "smollm3":
        from ..models.text.smollm3 import no_rope_layers

        uses_rope = cfg.get("no_rope_layers")
        if isinstance(uses_rope, list):
            if len(uses_rope) != layers or tuple(i for i, f in enumerate(uses_rope) if not f) != no_rope_layers(layers):
                raise FormatError(f"{where}: no_rope_layers is not every fourth layer", "llama.cpp fixes that pattern")
    if a == "mistral3":
        beta = params.get("llama_4_scaling_beta", cfg.get("llama_4_scaling_beta"))
        if beta:
            md["mistral3.attention.temperature_scale"] = _real({"b": beta}, "b", where)
            orig = params.get("original_max_position_embeddings", md[f"{a}.context_length"])
            md["mistral3.rope.scaling.original_context_length"] = _count({"o": orig}, "o", where)
    return md, dims


def _rope_scaling(
    cfg: Mapping[str, Any], params: Mapping[str, Any], arch: TextArch, context: int, dims: dict[str, Any], where: str
) -> dict[str, Any]:
    """GGUF metadata of ``rope_scaling`` / ``rope_parameters`` as llama.cpp's converter writes it:
    linear and YaRN as ``rope.scaling.*`` keys (YaRN's ``mscale_all_dim`` as the log multiplier),
    Llama 3's and LongRoPE's per-pair factors kept in ``dims`` for their tensors (LongRoPE's
    attention factor ``sqrt(1 + ln(s) / ln(original))``, ``s`` the context over the original)."""
    a = arch.name
    kind = params.get("rope_type", params.get("type", "default"))
    md: dict[str, Any] = {}
    if kind == "linear":
        md[f"{a}.rope.scaling.type"] = "linear"
        md[f"{a}.rope.scaling.factor"] = _real(params, "factor", where)
    elif kind == "llama3":
        dims["llama3_rope"] = params
    elif kind == "yarn":
        md[f"{a}.rope.scaling.type"] = "yarn"
        md[f"{a}.rope.scaling.factor"] = _real(params, "factor", where)
        original = params.get("original_max_position_embeddings", context)
        md[f"{a}.rope.scaling.original_context_length"] = _count({"o": original}, "o", where)
        for key, gguf in (
            ("extrapolation_factor", "yarn_ext_factor"),
            ("attention_factor", "yarn_attn_factor"),
            ("beta_fast", "yarn_beta_fast"),
            ("beta_slow", "yarn_beta_slow"),
            ("mscale_all_dim", "yarn_log_multiplier"),
        ):
            if params.get(key) is not None:
                md[f"{a}.rope.scaling.{gguf}"] = _real(params, key, where)
        if params.get("mscale", 1.0) != 1.0:
            raise FormatError(f"{where}: YaRN mscale {params['mscale']!r} is not supported", "llama.cpp assumes 1")
    elif kind in ("longrope", "su"):
        if a != "phi3":
            raise FormatError(f"{where}: LongRoPE on {a} is not supported", "llama.cpp runs it for phi3 only")
        original = _count(
            {"o": params.get("original_max_position_embeddings", cfg.get("original_max_position_embeddings"))},
            "o",
            where,
        )
        half = dims["head_dim"] // 2
        factors = {}
        for key in ("long_factor", "short_factor"):
            values = params.get(key)
            if not isinstance(values, list) or len(values) != half:
                raise FormatError(f"{where}: rope_scaling {key} is not a list of {half} numbers", "restore config.json")
            factors[key] = np.asarray([_real({"f": v}, "f", where) for v in values], np.float32)
        dims["longrope"] = factors
        md[f"{a}.rope.scaling.original_context_length"] = original
        scale = context / original
        factor = math.sqrt(1 + math.log(scale) / math.log(original)) if scale > 1 else 1.0
        md[f"{a}.rope.scaling.attn_factor"] = float(np.float32(factor))  # as the GGUF stores it
    elif kind not in ("default", None):
        raise FormatError(
            f"{where}: RoPE scaling {kind!r} is not supported", "supported: default, linear, llama3, yarn, longrope"
        )
    return md


def _tensors(
    source: WeightSource, arch: TextArch, cfg: Mapping[str, Any], dims: dict[str, Any], where: str
) -> LazyTensors:
    """The source tensors under GGUF names, with their conversions, computed when asked for."""
    makers: dict[str, tuple[tuple[int, ...], Callable[[], Any]]] = {}
    plus_one = arch.name in ("gemma", "gemma3")
    layer_re = re.compile(r"^model\.layers\.(\d{1,9})\.(.+)\.(weight|bias)$")
    for name, t in source.tensors.items():
        hf = name
        for old, new in TEXT_PREFIXES:
            if hf.startswith(old):
                hf = new + hf[len(old) :]
                break
        if SKIPPED.match(name) or SKIPPED.match(hf) or hf.endswith("rotary_emb.inv_freq"):
            continue
        m = layer_re.match(hf)
        if m is not None and m.group(2) in LAYER_NAMES and int(m.group(1)) < dims["layers"]:
            part = LAYER_NAMES[m.group(2)]
            if arch.name == "gemma3" and m.group(2) == "post_attention_layernorm":
                part = "post_attention_norm"
            gguf = f"blk.{int(m.group(1))}.{part}.{m.group(3)}"
        elif hf.rsplit(".", 1)[0] in TOP_NAMES and hf.endswith(".weight"):
            gguf = TOP_NAMES[hf.rsplit(".", 1)[0]] + ".weight"
        else:
            raise FormatError(f"{where}: tensor {name!r} is not understood", f"not part of a {arch.name} text model")
        if gguf in makers:
            raise FormatError(f"{where}: two tensors map to {gguf!r}", "the checkpoint mixes two models")
        if arch.name in PERMUTED and (gguf.endswith("attn_q.weight") or gguf.endswith("attn_k.weight")):
            heads = dims["heads"] if gguf.endswith("attn_q.weight") else dims["kv"]
            makers[gguf] = (t.shape, _permuted(t, heads, where))
        elif plus_one and gguf.endswith("norm.weight"):
            makers[gguf] = (t.shape, _plus_one(t))
        else:
            makers[gguf] = (t.shape, _as_is(t))
    if "output.weight" in makers and cfg.get("tie_word_embeddings", False) and arch.name in ("gemma", "gemma3"):
        makers.pop("output.weight")
    if "llama3_rope" in dims:
        factors = llama3_rope_factors(
            dims["llama3_rope"], float(cfg.get("rope_theta", 10000.0)), dims["head_dim"], where
        )
        makers["rope_freqs.weight"] = (factors.shape, lambda: factors)
    for key, name in (("long_factor", "rope_factors_long.weight"), ("short_factor", "rope_factors_short.weight")):
        if "longrope" in dims:
            values: np.ndarray = dims["longrope"][key]
            makers[name] = (values.shape, _constant(values))
    if "token_embd.weight" not in makers:
        raise FormatError(f"{where}: no embedding (model.embed_tokens.weight)", "the checkpoint is incomplete")
    return LazyTensors(makers)


def _constant(values: np.ndarray) -> Callable[[], np.ndarray]:
    return lambda: values


def _as_is(t: TensorData) -> Callable[[], TensorData]:
    return lambda: t


def _plus_one(t: TensorData) -> Callable[[], np.ndarray]:
    """Gemma's norm weights as llama.cpp stores them: the values plus one (float32)."""
    return lambda: float32_values(t) + np.float32(1.0)


def _permuted(t: TensorData, heads: int, where: str) -> Callable[[], TensorData]:
    """Rows of a q/k projection reordered from rotate-half pairs (transformers) to adjacent
    pairs (llama.cpp's ``llama``): per head, row ``i`` of the first half and row ``i`` of the
    second become rows ``2i`` and ``2i + 1``. Raw rows move; nothing is converted."""
    if len(t.shape) != 2 or t.shape[0] % (2 * heads) or t.dtype not in (*PLAIN_DTYPES, "BF16"):
        raise FormatError(
            f"{where}: tensor {t.name!r} of shape {list(t.shape)} is not a q/k projection of {heads} heads",
            "the weights do not match config.json: check num_attention_heads and num_key_value_heads",
        )

    def make() -> TensorData:
        rows, cols = t.shape
        raw = np.asarray(t.data).reshape(heads, 2, rows // heads // 2, cols)
        return TensorData(t.name, t.shape, t.dtype, np.ascontiguousarray(raw.swapaxes(1, 2)).reshape(rows, cols))

    return make


def unpermute(w: np.ndarray, heads: int) -> np.ndarray:
    """The inverse of `_permuted` (adjacent pairs -> rotate-half halves), as transformers'
    conversion scripts store q/k."""
    rows = w.shape[0]
    return w.reshape(heads, rows // heads // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(params: Mapping[str, Any], theta: float, head_dim: int, where: str) -> np.ndarray:
    """Llama 3's RoPE scaling as per-pair divisors of the base frequencies (``rope_freqs.weight``)."""
    try:
        factor = float(params["factor"])
        low, high = float(params.get("low_freq_factor", 1.0)), float(params.get("high_freq_factor", 4.0))
        old = float(params.get("original_max_position_embeddings", 8192))
    except (KeyError, TypeError, ValueError):
        raise FormatError(f"{where}: llama3 rope_scaling is incomplete", "restore the model's config.json") from None
    if not (factor > 0 and 0 < low < high and old > 0 and theta > 0):
        raise FormatError(f"{where}: llama3 rope_scaling values are not valid", "restore the model's config.json")
    out = []
    for i in range(0, head_dim, 2):
        freq = 1.0 / theta ** (i / head_dim)
        wavelen = 2 * math.pi / freq
        if wavelen < old / high:
            out.append(1.0)
        elif wavelen > old / low:
            out.append(factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.asarray(out, np.float32)
