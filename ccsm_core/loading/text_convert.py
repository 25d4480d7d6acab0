"""``ccsm convert`` for text models: a transformers folder (or any text source `text_source`
reads) written as a GGUF file llama.cpp loads, one tensor at a time.

Types (``--type``): 1-D tensors stay F32; matrices take the chosen type where their rows fit its
blocks (32 values; 256 for Q4_K, else Q8_0), else F16. ``general.file_type`` is llama.cpp's
number for the type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ..errors import FormatError, UsageError

TEXT_TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0", "q4_k")
FILE_TYPE = {"f32": 0, "f16": 1, "q4_0": 2, "q8_0": 7, "q4_k": 15, "bf16": 32}  # llama_ftype
QUANT_VERSION = 2


def store_type(name: str, shape: tuple[int, ...], qtype: str) -> str:
    """The GGML type a text tensor is written as for ``--type qtype``."""
    if len(shape) < 2 or name == "rope_freqs.weight":
        return "F32"
    if qtype in ("f32", "f16", "bf16"):
        return qtype.upper()
    cols = shape[-1]
    if qtype == "q4_k":
        return "Q4_K" if cols % 256 == 0 else "Q8_0" if cols % 32 == 0 else "F16"
    return qtype.upper() if cols % 32 == 0 else "F16"


def _shape(tensors: Mapping[str, Any], name: str) -> tuple[int, ...]:
    shape_of = getattr(tensors, "shape", None)
    return tuple(shape_of(name)) if callable(shape_of) else tuple(tensors[name].shape)


def is_text_model(path: str | Path) -> bool:
    """Whether ``path`` is a text model: a transformers folder of a text architecture, or a
    weights file whose metadata names one (GGUF, or a format plugin's file such as ONNX)."""
    from ..models.text import arch_names
    from .hf_folder import hf_config
    from .hf_text import text_config
    from .weights import open_weights

    p = Path(path).expanduser()
    if p.is_dir():
        try:
            cfg = hf_config(p)
        except FormatError:  # the CSM loader reports it
            return False
        return cfg is not None and text_config(cfg).get("model_type") != "csm"
    if not p.is_file() or p.suffix == ".safetensors":
        return False
    return str(open_weights(p).metadata.get("general.architecture")) in arch_names()


def convert_text(
    source: str | Path,
    out: str | Path,
    qtype: str = "f16",
    *,
    progress: Callable[[str, int], None] | None = None,
) -> Path:
    """Write the text model at ``source`` as one GGUF file; its weights are read and written one
    tensor at a time. Every name and shape is checked first, so a broken source fails before
    anything is written. ``progress(name, total)`` follows each tensor written."""
    from ..formats.gguf_writer import PlannedTensor, write_gguf_stream
    from ..models.text import TextConfig
    from ..tokenizers.gguf_tokenizer import tokenizer_from_gguf
    from .text import text_source

    if qtype not in TEXT_TYPES:
        raise UsageError(f"unknown --type {qtype!r} for a text model", f"one of {', '.join(TEXT_TYPES)}")
    metadata, tensors = text_source(source)
    tok = tokenizer_from_gguf(metadata)
    cfg = TextConfig.from_metadata(metadata, tok.vocab_size, str(source))
    _check_model(cfg, tensors)
    md = dict(metadata)
    arch = str(md.pop("general.architecture"))
    md["general.file_type"] = FILE_TYPE[qtype]
    md["general.quantization_version"] = QUANT_VERSION
    plan = []
    for name in tensors:
        shape = _shape(tensors, name)
        plan.append(PlannedTensor(name, shape, store_type(name, shape, qtype), _maker(tensors, name)))
    done = None if progress is None else (lambda name: progress(name, len(plan)))
    return write_gguf_stream(out, md, arch, plan, progress=done)


def _maker(tensors: Mapping[str, Any], name: str) -> Callable[[], Any]:
    return lambda: tensors[name]


def _check_model(cfg: Any, tensors: Mapping[str, Any]) -> None:
    """Every tensor the model needs exists with its shape, read from the plan (nothing computed)."""
    st = cfg.stack
    d, hd, ff = st.embed_dim, st.head_dim, st.intermediate_dim
    q, kv = st.num_heads * hd, st.num_kv_heads * hd
    want: dict[str, tuple[int, ...]] = {"token_embd.weight": (cfg.vocab_size, d), "output_norm.weight": (d,)}
    optional: dict[str, tuple[int, ...]] = {"output.weight": (cfg.vocab_size, d)}
    optional.update({f"{n}.weight": (hd // 2,) for n in ("rope_freqs", "rope_factors_long", "rope_factors_short")})
    for i in range(st.num_layers):
        p = f"blk.{i}."
        want.update({p + "attn_norm.weight": (d,), p + "ffn_norm.weight": (d,)})
        want.update({p + "attn_output.weight": (d, q), p + "ffn_down.weight": (d, ff)})
        if p + "attn_qkv.weight" in tensors:
            want[p + "attn_qkv.weight"] = (q + 2 * kv, d)
        else:
            want.update({p + "attn_q.weight": (q, d), p + "attn_k.weight": (kv, d), p + "attn_v.weight": (kv, d)})
        if p + "ffn_gate.weight" in tensors:
            want.update({p + "ffn_gate.weight": (ff, d), p + "ffn_up.weight": (ff, d)})
        else:
            want[p + "ffn_up.weight"] = (2 * ff, d)
        for name, shape in (("attn_q.bias", (q,)), ("attn_k.bias", (kv,)), ("attn_v.bias", (kv,))):
            optional[p + name] = shape
        for name in ("attn_q_norm", "attn_k_norm"):
            optional[f"{p}{name}.weight"] = (hd,)
        for name in ("post_attention_norm", "post_ffw_norm"):
            optional[f"{p}{name}.weight"] = (d,)
    for name in tensors:
        if name not in want and name not in optional:
            raise FormatError(f"tensor {name!r} is not part of a {cfg.arch} model of this shape", "the source differs")
    for name in want:
        if name not in tensors:
            raise FormatError(f"tensor {name!r} is missing", "the model's weights are incomplete")
    for name in tensors:
        expected = (want | optional)[name]
        if _shape(tensors, name) != expected:
            raise FormatError(
                f"tensor {name!r} has shape {list(_shape(tensors, name))}, expected {list(expected)}",
                "the config does not match the weights",
            )
