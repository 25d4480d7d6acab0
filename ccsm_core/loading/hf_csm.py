"""CSM in the transformers layout (``CsmForConditionalGeneration``), read as the original.

A folder with ``config.json`` (``model_type`` ``csm``: the backbone's keys at the top,
``depth_decoder_config``, ``codec_config``), safetensors (sharded with an index, or one file) and
the tokenizer. Its tensors are renamed back to the original checkpoint's names, q/k rows moved
from rotate-half order back to adjacent pairs, ``depth_decoder.codebooks_head.weight``
``[31, decoder_dim, audio_vocab]`` is the original ``audio_head``; the tied decoder embedding is
checked against the audio embeddings' shape and dropped. The Mimi codec inside (``codec_model.``
with transformers' Mimi names, q/k/v split) becomes moshi's names and constructor arguments.
Every tensor is computed when asked for (`LazyTensors`), so a conversion holds one at a time.
The RoPE scaling the converter rewrote (factor 32, low 0.125, high 0.5, original length 1024)
is the same Llama 3 scaling as the original's (1, 4, 8192), read as given.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import FormatError, ModelError
from ..models.config import CsmConfig, LlamaConfig, check_csm, check_llama
from ..tensors import TensorData
from .hf_folder import config_count as _count
from .hf_folder import config_real as _real
from .hf_folder import hf_config, open_shards
from .hf_text import LazyTensors

CSM_LAYER = {
    "self_attn.q_proj": "attn.q_proj",
    "self_attn.k_proj": "attn.k_proj",
    "self_attn.v_proj": "attn.v_proj",
    "self_attn.o_proj": "attn.output_proj",
    "mlp.gate_proj": "mlp.w1",
    "mlp.down_proj": "mlp.w2",
    "mlp.up_proj": "mlp.w3",
}
CSM_TOP = {
    "embed_text_tokens.weight": "text_embeddings.weight",
    "backbone_model.embed_tokens.embed_text_tokens.weight": "text_embeddings.weight",
    "backbone_model.embed_tokens.embed_audio_tokens.weight": "audio_embeddings.weight",
    "lm_head.weight": "codebook0_head.weight",
    "depth_decoder.codebooks_head.weight": "audio_head",
    "depth_decoder.model.inputs_embeds_projector.weight": "projection.weight",
    "backbone_model.norm.weight": "backbone.norm.scale",
    "depth_decoder.model.norm.weight": "decoder.norm.scale",
}
TIED = ("depth_decoder.model.embed_tokens.weight", "depth_decoder.model.embed_tokens.embed_audio_tokens.weight")
# transformers' Mimi names -> moshi's, applied in order (the inverse of transformers' converter)
MIMI_RENAMES = (
    (r"^downsample\.conv\.", "downsample.conv.conv.conv."),
    (r"^upsample\.conv\.", "upsample.convtr.convtr.convtr."),
    (r"^quantizer\.semantic_residual_vector_quantizer\.layers\.", "quantizer.rvq_first.vq.layers."),
    (r"^quantizer\.acoustic_residual_vector_quantizer\.layers\.", "quantizer.rvq_rest.vq.layers."),
    (r"^quantizer\.semantic_residual_vector_quantizer\.", "quantizer.rvq_first."),
    (r"^quantizer\.acoustic_residual_vector_quantizer\.", "quantizer.rvq_rest."),
    (r"\.codebook\.embed_sum$", "._codebook.embedding_sum"),
    (r"\.codebook\.cluster_usage$", "._codebook.cluster_usage"),
    (r"\.codebook\.initialized$", "._codebook._initialized"),
    (r"^(encoder|decoder)_transformer\.layers\.", r"\1_transformer.transformer.layers."),
    (r"\.mlp\.fc1\.", ".linear1."),
    (r"\.mlp\.fc2\.", ".linear2."),
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"\.input_layernorm\.", ".norm1."),
    (r"\.post_attention_layernorm\.", ".norm2."),
    (r"\.self_attn_layer_scale\.", ".layer_scale_1."),
    (r"\.mlp_layer_scale\.", ".layer_scale_2."),
    (r"^(encoder|decoder)\.layers\.", r"\1.model."),
)


@dataclass
class HfCsm:
    """A transformers CSM folder as the original: config, tensors under original names, Mimi."""

    config: CsmConfig
    tensors: LazyTensors  # original names -> values, each computed when asked for
    mimi_tensors: LazyTensors | None
    mimi_config: dict[str, Any] | None
    tokenizer: Path | None


def is_hf_csm(path: str | Path) -> bool:
    """Whether ``path`` is a transformers CSM folder (an unreadable config.json is left to the
    original layout's loader to report)."""
    try:
        cfg = hf_config(Path(path).expanduser())
    except FormatError:
        return False
    return cfg is not None and cfg.get("model_type") == "csm"


def _check_halves(shape: tuple[int, ...], heads: int, where: str) -> None:
    if len(shape) != 2 or shape[0] % (2 * heads):
        raise FormatError(
            f"{where}: a q/k projection of shape {list(shape)} does not split into {heads} heads",
            "the weights do not match config.json; restore the model's files",
        )


def pairs_from_halves(t: Any, heads: int, where: str) -> Any:
    """q/k rows from rotate-half order (transformers) to adjacent pairs (the original): per head,
    rows ``i`` and ``i + hd/2`` become rows ``2i`` and ``2i + 1``. Raw storage moves unconverted
    (a `TensorData` stays one, an array an array)."""
    raw = np.asarray(t.data if isinstance(t, TensorData) else t)
    shape = tuple(t.shape)
    _check_halves(shape, heads, where)
    rows, cols = shape
    moved = np.ascontiguousarray(raw.reshape(heads, 2, rows // heads // 2, -1).swapaxes(1, 2)).reshape(rows, -1)
    return TensorData(t.name, shape, t.dtype, moved) if isinstance(t, TensorData) else moved.reshape(shape)


def stack_config(cfg: Mapping[str, Any], where: str) -> LlamaConfig:
    """A transformers Llama-style config (backbone or depth decoder) as a `LlamaConfig`."""
    heads = _count(cfg, "num_attention_heads", where)
    dim = _count(cfg, "hidden_size", where)
    head_dim = _count(cfg, "head_dim", where, max(dim // heads, 1))
    scaling = cfg.get("rope_scaling") or {}
    kind = scaling.get("rope_type", scaling.get("type", "default")) if isinstance(scaling, dict) else None
    if kind not in ("default", "llama3"):
        raise FormatError(f"{where}: RoPE scaling {kind!r} is not supported", "CSM uses llama3 scaling")
    llama3 = kind == "llama3"
    out = LlamaConfig(
        num_layers=_count(cfg, "num_hidden_layers", where),
        num_heads=heads,
        num_kv_heads=_count(cfg, "num_key_value_heads", where, heads),
        embed_dim=dim,
        intermediate_dim=_count(cfg, "intermediate_size", where),
        max_seq_len=_count(cfg, "max_position_embeddings", where, 2048),
        norm_eps=_real(cfg, "rms_norm_eps", where, 1e-5),
        rope_base=_real(cfg, "rope_theta", where, 500000.0),
        scale_factor=_real(scaling, "factor", where) if llama3 else None,
        low_freq_factor=_real(scaling, "low_freq_factor", where, 1.0) if llama3 else 1.0,
        high_freq_factor=_real(scaling, "high_freq_factor", where, 4.0) if llama3 else 4.0,
        old_context_len=_count(scaling, "original_max_position_embeddings", where, 8192) if llama3 else 8192,
        head_size=head_dim if head_dim != dim // heads else None,
    )
    return check_llama(out, where)


def csm_config(cfg: Mapping[str, Any], where: str) -> CsmConfig:
    dec = cfg.get("depth_decoder_config")
    if not isinstance(dec, dict):
        raise FormatError(f"{where}: no depth_decoder_config", "a CsmForConditionalGeneration config has one")
    backbone = stack_config(cfg, where)
    decoder = stack_config(dec, f"{where}: depth_decoder_config")
    codebooks = _count(cfg, "num_codebooks", where, 32)
    if _count(dec, "num_codebooks", where, codebooks) != codebooks:
        raise FormatError(
            f"{where}: the depth decoder's num_codebooks differs from the model's", "restore the model's config.json"
        )
    out = CsmConfig(
        backbone=backbone,
        decoder=decoder,
        text_vocab_size=_count(cfg, "text_vocab_size", where, 128256),
        audio_vocab_size=_count(cfg, "vocab_size", where, 2051),
        audio_num_codebooks=codebooks,
        backbone_flavor="backbone",
        decoder_flavor="depth_decoder",
    )
    return check_csm(out, where)


def moshi_config(codec: Mapping[str, Any], where: str) -> dict[str, Any]:
    """transformers' ``MimiConfig`` keys as moshi's constructor arguments."""
    hidden = _count(codec, "hidden_size", where, 512)
    ratios = codec.get("upsampling_ratios", [8, 6, 5, 4])
    if not isinstance(ratios, list) or not all(isinstance(r, int) and 0 < r < 64 for r in ratios):
        raise FormatError(
            f"{where}: upsampling_ratios {str(ratios)[:40]} are not valid", "give a list of counts below 64"
        )
    return {
        "seanet": {
            "dimension": hidden,
            "n_filters": _count(codec, "num_filters", where, 64),
            "n_residual_layers": _count(codec, "num_residual_layers", where, 1),
            "ratios": ratios,
            "kernel_size": _count(codec, "kernel_size", where, 7),
            "residual_kernel_size": _count(codec, "residual_kernel_size", where, 3),
            "last_kernel_size": _count(codec, "last_kernel_size", where, 3),
            "dilation_base": _count(codec, "dilation_growth_rate", where, 2),
            "compress": _count(codec, "compress", where, 2),
            "pad_mode": str(codec.get("pad_mode", "constant")),
            "true_skip": not codec.get("use_conv_shortcut", False),
            "causal": bool(codec.get("use_causal_conv", True)),
        },
        "transformer": {
            "d_model": hidden,
            "input_dimension": hidden,
            "output_dimensions": [hidden],
            "num_heads": _count(codec, "num_attention_heads", where, 8),
            "num_layers": _count(codec, "num_hidden_layers", where, 8),
            "dim_feedforward": _count(codec, "intermediate_size", where, 2048),
            "context": _count(codec, "sliding_window", where, 250),
            "max_period": _real(codec, "rope_theta", where, 10000.0),
            "layer_scale": _real(codec, "layer_scale_initial_scale", where, 0.01),
        },
        "quantizer": {
            "dimension": _count(codec, "vector_quantization_hidden_dimension", where, 256),
            "n_q": _count(codec, "num_quantizers", where, 32),
            "bins": _count(codec, "codebook_size", where, 2048),
            "input_dimension": hidden,
            "output_dimension": hidden,
        },
        "sample_rate": _count(codec, "sampling_rate", where, 24000),
        "frame_rate": _real(codec, "frame_rate", where, 12.5),
    }


def decoder_transposed(seanet: Mapping[str, Any]) -> set[str]:
    """Indices of the SEANet decoder's transposed convolutions: after the first convolution,
    each ratio's stage is an ELU, the transposed convolution, then its residual blocks."""
    stage = 2 + int(seanet["n_residual_layers"])
    return {str(2 + i * stage) for i in range(len(seanet["ratios"]))}


def moshi_name(name: str, transposed: set[str]) -> str:
    """transformers' Mimi tensor name -> moshi's (convolutions: ``conv.conv`` / ``convtr.convtr``)."""
    for pattern, repl in MIMI_RENAMES:
        name = re.sub(pattern, repl, name)
    m = re.match(r"^(encoder|decoder)\.model\.(\d+)\.", name)
    if m is not None:
        kind = "convtr" if m.group(1) == "decoder" and m.group(2) in transposed and ".block." not in name else "conv"
        name = re.sub(r"\.conv\.(weight|bias)$", rf".{kind}.{kind}.\1", name)
    return name


def mimi_tensors(codec: Mapping[str, Any], cfg: Mapping[str, Any], where: str) -> LazyTensors:
    """The codec's tensors (names without ``codec_model.``) under moshi's names, q/k/v joined
    into ``in_proj_weight`` with q/k rows back in adjacent-pair order (computed when asked for)."""
    transposed = decoder_transposed(cfg["seanet"])
    heads = int(cfg["transformer"]["num_heads"])
    out: dict[str, tuple[tuple[int, ...], Callable[[], Any]]] = {}
    pending: dict[str, dict[str, Any]] = {}
    for name, t in codec.items():
        m = re.match(r"^(.*)\.self_attn\.([qkv])_proj\.weight$", name)
        if m is not None:
            pending.setdefault(m.group(1), {})[m.group(2)] = t
            continue
        out[moshi_name(name, transposed)] = (tuple(t.shape), _given(t))
    for prefix, qkv in pending.items():
        if set(qkv) != {"q", "k", "v"}:
            raise FormatError(f"{where}: {prefix} lacks some of q/k/v_proj", "the codec weights are incomplete")
        shapes = [tuple(qkv[n].shape) for n in "qkv"]
        for shape in shapes[:2]:
            _check_halves(shape, heads, where)
        if len({s[1:] for s in shapes}) != 1:
            raise FormatError(f"{where}: {prefix}'s q/k/v_proj differ in width", "the codec weights are broken")
        shape = (sum(s[0] for s in shapes), *shapes[0][1:])
        out[moshi_name(prefix, transposed) + ".self_attn.in_proj_weight"] = (
            shape,
            partial(_in_proj, qkv, heads, where),
        )
    return LazyTensors(out)


def _given(t: Any) -> Callable[[], Any]:
    return lambda: t


def _in_proj(qkv: Mapping[str, Any], heads: int, where: str) -> np.ndarray:
    """Mimi's joined q/k/v projection (q/k rows in adjacent-pair order), float32."""
    q, k = (pairs_from_halves(qkv[n], heads, where) for n in "qk")
    parts = [np.asarray(x.numpy() if isinstance(x, TensorData) else x, np.float32) for x in (q, k, qkv["v"])]
    return np.concatenate(parts)


def open_hf_csm(folder: str | Path) -> HfCsm:
    """The transformers CSM in ``folder`` as the original's config, tensors and Mimi."""
    p = Path(folder).expanduser()
    raw = hf_config(p)
    if raw is None or raw.get("model_type") != "csm":
        raise ModelError(f"{p} is not a transformers CSM folder", "it needs config.json with model_type 'csm'")
    where = str(p / "config.json")
    cfg = csm_config(raw, where)
    source = open_shards(p)
    tensors: dict[str, tuple[tuple[int, ...], Callable[[], Any]]] = {}
    codec: dict[str, Any] = {}
    layer = re.compile(r"^(backbone_model|depth_decoder\.model)\.layers\.(\d+)\.(.+)$")
    for name, t in source.tensors.items():
        if name.startswith("codec_model."):
            codec[name[len("codec_model.") :]] = t
            continue
        if name in TIED:
            continue
        m = layer.match(name)
        if m is not None:
            stack = "backbone" if m.group(1) == "backbone_model" else "decoder"
            part = m.group(3)
            for hf, orig in (*CSM_LAYER.items(), ("input_layernorm.weight", "sa_norm.scale")):
                part = part.replace(hf, orig)
            part = part.replace("post_attention_layernorm.weight", "mlp_norm.scale")
            new = f"{stack}.layers.{m.group(2)}.{part}"
            st = cfg.backbone if stack == "backbone" else cfg.decoder
            if part.endswith(("attn.q_proj.weight", "attn.k_proj.weight")):
                heads = st.num_heads if "q_proj" in part else st.num_kv_heads
                _check_halves(tuple(t.shape), heads, where)
                tensors[new] = (tuple(t.shape), partial(pairs_from_halves, t, heads, where))
            else:
                tensors[new] = (tuple(t.shape), _given(t))
        elif name in CSM_TOP:
            tensors[CSM_TOP[name]] = (tuple(t.shape), _given(t))
        else:
            raise FormatError(
                f"{where}: tensor {name!r} is not part of CsmForConditionalGeneration",
                "the folder holds another model's weights; pass a CSM folder",
            )
    for name in TIED:
        if name in source.tensors and "audio_embeddings.weight" in tensors:
            if tuple(source.tensors[name].shape) != tensors["audio_embeddings.weight"][0]:
                raise FormatError(f"{where}: {name} does not match the audio embeddings", "the checkpoint is broken")
    mimi, mimi_cfg = None, None
    if codec:
        codec_cfg = raw.get("codec_config")
        if not isinstance(codec_cfg, dict):
            raise FormatError(f"{where}: codec weights but no codec_config", "restore the model's config.json")
        mimi_cfg = moshi_config(codec_cfg, f"{where}: codec_config")
        mimi = mimi_tensors(codec, mimi_cfg, where)
    tokenizer = next((p / n for n in ("tokenizer.json", "tokenizer.model") if (p / n).is_file()), None)
    return HfCsm(cfg, LazyTensors(tensors), mimi, mimi_cfg, tokenizer)
