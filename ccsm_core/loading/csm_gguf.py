"""One GGUF file for a whole CSM speech model: CSM weights, Mimi weights and the tokenizer, from a
checkpoint in the original layout or in transformers' (`hf_csm`).

Layout (architecture ``csm``):

- metadata ``csm.config`` (the CSM config as JSON, flavours spelled out), ``csm.mimi_config``
  (moshi's Mimi constructor arguments as JSON, when Mimi is included), ``tokenizer.huggingface.json``
  (the ``tokenizer.json`` text) and ``general.file_type`` (the ``--type``).
- CSM tensors under their original names, except ``audio_head`` which is stored per codebook as
  ``audio_head.{i}.weight`` ``[vocab, decoder_dim]`` (ready for ``matmul``).
- Mimi tensors under ``mimi.`` + moshi's names with long parts shortened (`MIMI_SHORT`), since
  GGUF names are limited to 63 bytes.

``--type`` quantizes matrix weights (projections, heads, embedding tables) whose rows fit the
type's blocks; norms stay F32 and Mimi stays F32 (convolutions and the codec are small).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from .. import schema
from ..errors import FormatError, ModelError, UsageError
from ..limits import loads_json
from ..models.mimi import mimi_config
from ..models.mimi_schema import check_sections
from ..tensors import TensorData, float32_values, take_rows
from .weights import open_weights

ARCH = "csm"
TYPES = ("f32", "f16", "bf16", "q8_0", "q4_0")
MAX_NAME = 63
MIMI_SHORT = (
    ("encoder_transformer.transformer.layers.", "enc_tr."),
    ("decoder_transformer.transformer.layers.", "dec_tr."),
    ("quantizer.rvq_first.", "q1."),
    ("quantizer.rvq_rest.", "qr."),
    ("vq.layers.", "vq."),
    ("_codebook.", "cb."),
)


def mimi_gguf_name(name: str) -> str:
    for long, short in MIMI_SHORT:
        name = name.replace(long, short)
    return "mimi." + name


def mimi_original_name(name: str) -> str:
    """Inverse of `mimi_gguf_name` (every short form is a whole dotted segment)."""
    name = name[len("mimi.") :]
    for long, short in reversed(MIMI_SHORT):
        if name.startswith(short):
            name = long + name[len(short) :]
        name = name.replace("." + short, "." + long)
    return name


def _store_type(name: str, shape: tuple[int, ...], qtype: str) -> str:
    """The GGML type a CSM tensor of ``shape`` is written as for ``--type qtype``."""
    if len(shape) < 2 or name.endswith(".scale"):
        return "F32"
    if qtype in ("f32", "f16", "bf16"):
        return qtype.upper()
    block = 32
    return qtype.upper() if shape[-1] % block == 0 else "F16"


def _fusable_order(names: list[str]) -> list[str]:
    """Each layer's q/k/v projections, and its w1/w3, back to back: loaders then fuse them into
    one product over a view of the mapped file, without a copy (`stack_rows`)."""
    groups = (("attn.q_proj.weight", "attn.k_proj.weight", "attn.v_proj.weight"), ("mlp.w1.weight", "mlp.w3.weight"))
    present = set(names)
    out: dict[str, None] = {}
    for name in names:
        if name in out:
            continue
        for group in groups:
            hit = next((g for g in group if name.endswith("." + g)), None)
            if hit is not None:
                prefix = name[: -len(hit)]
                out.update(dict.fromkeys(prefix + g for g in group if prefix + g in present))
                break
        else:
            out[name] = None
    return list(out)


def _shape(tensors: Mapping[str, Any], name: str) -> tuple[int, ...]:
    """A tensor's shape without computing it (lazy mappings know it)."""
    shape_of = getattr(tensors, "shape", None)
    return tuple(shape_of(name)) if callable(shape_of) else tuple(tensors[name].shape)


def _check_shapes(cfg: Any, weights: Mapping[str, Any]) -> None:
    """Every CSM tensor exists with its shape (read from the names, nothing computed)."""
    from ..models.csm import csm_shapes

    for name, shape in csm_shapes(cfg).items():
        if name not in weights:
            raise FormatError(
                f"csm: tensor {name!r} is missing", "the checkpoint is incomplete or for a different model flavour"
            )
        if _shape(weights, name) != shape:
            raise FormatError(
                f"csm: tensor {name!r} has shape {list(_shape(weights, name))}, expected {list(shape)}",
                "the checkpoint does not match its config",
            )


def _value(tensors: Mapping[str, Any], name: str) -> Callable[[], np.ndarray]:
    return lambda: float32_values(tensors[name])


def _audio_head(weights: Mapping[str, Any], i: int) -> Callable[[], np.ndarray]:
    """Codebook ``i``'s head ``[vocab, decoder_dim]``, read from its slice of ``audio_head`` alone."""

    def make() -> np.ndarray:
        row = float32_values(take_rows(weights["audio_head"], i, i + 1))
        return np.ascontiguousarray(row.reshape(row.shape[-2:]).T)

    return make


def convert_csm(
    folder: str | Path,
    out: str | Path,
    qtype: str = "f32",
    *,
    progress: Callable[[str, int], None] | None = None,
) -> Path:
    """Write the CSM checkpoint ``folder`` (+ its Mimi and tokenizer) into one GGUF file, one
    tensor at a time: each is read (or computed), converted and written before the next, so
    memory stays near one tensor. Every name and shape is checked first, so a broken checkpoint
    fails before anything is written. ``progress(name, total)`` follows each tensor written."""
    from ..formats.gguf_writer import PlannedTensor, write_gguf_stream
    from .checkpoint import find_model_files, read_config, read_mimi_config
    from .sources import find_mimi

    if qtype not in TYPES:
        raise UsageError(f"unknown --type {qtype!r}", f"one of {', '.join(TYPES)}")
    from .hf_csm import is_hf_csm, open_hf_csm

    hf = open_hf_csm(folder) if is_hf_csm(folder) else None
    weights: Mapping[str, Any]
    if hf is not None:
        cfg, weights, tokenizer = hf.config, hf.tensors, hf.tokenizer
    else:
        files = find_model_files(folder)
        cfg, weights, tokenizer = read_config(files.config), open_weights(files.weights), files.tokenizer
    _check_shapes(cfg, weights)
    full = {**cfg.as_dict()}
    full["flavors"] = {cfg.backbone_flavor: _flavor(cfg.backbone), cfg.decoder_flavor: _flavor(cfg.decoder)}
    metadata: dict[str, Any] = {
        "csm.config": json.dumps(full),
        "general.name": Path(folder).name,
        "general.file_type": qtype,
    }
    planned: dict[str, PlannedTensor] = {}
    for name in weights:
        shape = _shape(weights, name)
        if name == "audio_head":
            for i in range(shape[0]):
                head_shape = (shape[2], shape[1])
                head = f"audio_head.{i}.weight"
                planned[head] = PlannedTensor(
                    head, head_shape, _store_type("audio_head", head_shape, qtype), _audio_head(weights, i)
                )
            continue
        planned[name] = PlannedTensor(name, shape, _store_type(name, shape, qtype), _value(weights, name))
    plan = [planned[name] for name in _fusable_order(list(planned))]
    if tokenizer is not None and tokenizer.suffix == ".json":
        metadata["tokenizer.huggingface.json"] = tokenizer.read_text()
    elif tokenizer is not None:
        raise ModelError(
            f"{tokenizer}: only tokenizer.json can be embedded in a CSM GGUF",
            "convert with a tokenizer.json beside the model",
        )
    mimi_source: tuple[Mapping[str, Any], dict | None] | None = None
    if hf is not None:
        mimi_source = (hf.mimi_tensors, hf.mimi_config) if hf.mimi_tensors is not None else None
    else:
        mimi = find_mimi(files.weights)
        if mimi is not None:
            mimi_source = (open_weights(mimi[0]), read_mimi_config(mimi[1]) if mimi[1] is not None else None)
    if mimi_source is not None:
        metadata["csm.mimi_config"] = json.dumps(mimi_config(mimi_source[1]))
        mimi_weights = mimi_source[0]
        for name in mimi_weights:
            if name.endswith("_initialized"):
                continue
            gname = mimi_gguf_name(name)
            if len(gname.encode()) > MAX_NAME:
                raise FormatError(
                    f"Mimi tensor name {name!r} is too long for GGUF even shortened", "pass moshi's Mimi weights"
                )
            plan.append(PlannedTensor(gname, _shape(mimi_weights, name), "F32", _value(mimi_weights, name)))
    for t in plan:
        if len(t.name.encode()) > MAX_NAME:
            raise FormatError(
                f"tensor name {t.name!r} is longer than GGUF's {MAX_NAME} bytes",
                "the checkpoint's names are not CSM's; pass a CSM checkpoint",
            )
    done = None if progress is None else (lambda name: progress(name, len(plan)))
    return write_gguf_stream(out, metadata, ARCH, plan, progress=done)


def _flavor(cfg: Any) -> dict[str, Any]:
    from dataclasses import fields

    return {f.name: getattr(cfg, f.name) for f in fields(cfg)}


_CONVERT = "convert the model again with `ccsm convert`"


def _json_entry(md: Mapping[str, Any], key: str, path: Path) -> Any:
    """The JSON text of metadata ``key``, parsed with bounds (`FormatError` when missing or broken)."""
    if key not in md:
        raise FormatError(f"{path}: CSM metadata {key} is missing", _CONVERT)
    text = schema.text(md[key], key, str(path), max_len=1 << 20, hint=_CONVERT)
    return loads_json(text, f"{path}: {key}", _CONVERT)


class GGUFCsm:
    """What a CSM GGUF holds: config, CSM tensors, Mimi tensors + config, tokenizer JSON."""

    def __init__(self, path: str | Path) -> None:
        from ..models.config import CsmConfig

        self.path = Path(path)
        src = open_weights(self.path)
        md = src.metadata
        if md.get("general.architecture") != ARCH:
            raise ModelError(
                f"{self.path} is a {md.get('general.architecture')!r} model, not CSM",
                "use `ccsm generate` for text models",
            )
        self.config = CsmConfig.from_dict(_json_entry(md, "csm.config", self.path), f"{self.path}: csm.config")
        self.mimi_config: dict | None = None
        if "csm.mimi_config" in md:
            where = f"{self.path}: csm.mimi_config"
            self.mimi_config = dict(check_sections(_json_entry(md, "csm.mimi_config", self.path), where))
            mimi_config(self.mimi_config)  # every value checked now, before anything is built
        tokenizer = md.get("tokenizer.huggingface.json")
        if tokenizer is not None:
            schema.text(tokenizer, "tokenizer.huggingface.json", str(self.path), max_len=1 << 28, hint=_CONVERT)
        self.tokenizer_json = tokenizer
        self.csm_tensors: dict[str, TensorData] = {}
        self.mimi_tensors: dict[str, TensorData] = {}
        for name, t in src.items():
            if name.startswith("mimi."):
                self.mimi_tensors[mimi_original_name(name)] = t
            else:
                self.csm_tensors[name] = t

    def tensors(self) -> Mapping[str, TensorData]:
        return self.csm_tensors
