"""The schema of a Mimi configuration (moshi's constructor arguments), from ``mimi_config.json``,
a CSM GGUF's ``csm.mimi_config`` or transformers' ``codec_config``: every section an object,
every size a count in range, every rate finite and positive, before a layer is built from it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import schema
from ..errors import FormatError

SECTIONS = ("seanet", "transformer", "quantizer")
MAX_WIDTH = 1 << 14  # channels, model width, feed-forward width
MAX_KERNEL = 64
MAX_LAYERS = 64
MAX_RATIOS = 8
MIN_RATE, MAX_RATE = 1000, 384_000  # sample rates a codec may run at
MAX_CONTEXT = 1 << 12  # the transformer's attention window, which sizes its cache (Mimi's is 250)
MAX_CODEBOOKS = 64
MAX_BINS = 1 << 16
_HINT = "use moshi's mimi_config.json, or none for the released Mimi"


def check_sections(config: Any, where: str) -> Mapping[str, Any]:
    """A config to merge over the defaults: an object whose sections, when given, are objects."""
    cfg = schema.mapping(config, "the Mimi config", where, hint=_HINT)
    for sec in SECTIONS:
        if sec in cfg:
            schema.mapping(cfg[sec], sec, where, hint=_HINT)
    return cfg


def check_mimi(cfg: Mapping[str, Any], where: str = "Mimi config") -> None:
    """`FormatError` unless the merged config ``cfg`` has every field in type and range."""
    sc, tc, qc = (check_sections(cfg, where)[s] for s in SECTIONS)

    def count(sec: Mapping[str, Any], name: str, high: int, low: int = 1) -> int:
        return schema.count(sec.get(name), name, where, low=low, high=high, hint=_HINT)

    def flag(sec: Mapping[str, Any], name: str) -> None:
        if not isinstance(sec.get(name), bool):
            raise FormatError(f"{where}: {name} = {str(sec.get(name))[:40]!r} is not true or false", _HINT)

    schema.count(sc.get("channels"), "seanet.channels", where, low=1, high=1, hint=_HINT)
    for name in ("dimension", "n_filters"):
        count(sc, name, MAX_WIDTH)
    count(sc, "n_residual_layers", MAX_LAYERS, low=0)
    count(sc, "disable_norm_outer_blocks", MAX_LAYERS, low=0)
    for name in ("compress", "dilation_base"):
        count(sc, name, MAX_KERNEL)
    for name in ("kernel_size", "residual_kernel_size", "last_kernel_size"):
        count(sc, name, MAX_KERNEL)
    ratios = sc.get("ratios")
    if not isinstance(ratios, list) or not 1 <= len(ratios) <= MAX_RATIOS:
        raise FormatError(f"{where}: seanet.ratios is not a list of 1..{MAX_RATIOS} counts", _HINT)
    for r in ratios:
        schema.count(r, "seanet.ratios[]", where, high=MAX_KERNEL, hint=_HINT)
    if sc["n_filters"] << len(ratios) > MAX_WIDTH:
        raise FormatError(f"{where}: seanet n_filters x 2^{len(ratios)} exceeds {MAX_WIDTH} channels", _HINT)
    schema.text(sc.get("pad_mode"), "seanet.pad_mode", where, max_len=32, hint=_HINT)
    for name in ("causal", "true_skip"):
        flag(sc, name)

    d = count(tc, "d_model", MAX_WIDTH)
    heads = count(tc, "num_heads", MAX_WIDTH)
    schema.divides(heads, d, "transformer num_heads into d_model", where, hint=_HINT)
    if (d // heads) % 2:
        raise FormatError(f"{where}: transformer head dimension {d // heads} is odd (RoPE rotates pairs)", _HINT)
    count(tc, "num_layers", MAX_LAYERS, low=0)
    count(tc, "dim_feedforward", MAX_WIDTH)
    count(tc, "input_dimension", MAX_WIDTH)
    count(tc, "context", MAX_CONTEXT)
    schema.positive(tc.get("max_period"), "transformer.max_period", where, hint=_HINT)
    if tc.get("layer_scale") is not None:
        schema.real(tc.get("layer_scale"), "transformer.layer_scale", where, low=-1e6, high=1e6, hint=_HINT)
    outs = tc.get("output_dimensions")
    if not isinstance(outs, list) or not outs:
        raise FormatError(f"{where}: transformer.output_dimensions is not a list of counts", _HINT)
    for o in outs:
        schema.count(o, "transformer.output_dimensions[]", where, high=MAX_WIDTH, hint=_HINT)
    for name in ("causal", "conv_layout"):
        flag(tc, name)

    for name in ("dimension", "input_dimension", "output_dimension"):
        count(qc, name, MAX_WIDTH)
    n_q = count(qc, "n_q", MAX_CODEBOOKS)
    count(qc, "bins", MAX_BINS)

    rate = schema.count(cfg.get("sample_rate"), "sample_rate", where, low=MIN_RATE, high=MAX_RATE, hint=_HINT)
    frame = schema.positive(cfg.get("frame_rate"), "frame_rate", where, high=rate, hint=_HINT)
    schema.real(cfg.get("encoder_frame_rate"), "encoder_frame_rate", where, low=frame, high=rate, hint=_HINT)
    schema.count(cfg.get("num_codebooks"), "num_codebooks", where, high=n_q, hint=_HINT)
