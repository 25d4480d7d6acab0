"""A transformers model folder: ``config.json`` and its safetensors weights, one file or shards
listed by ``model.safetensors.index.json`` (``weight_map``: tensor name -> shard file)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from .. import schema
from ..errors import FormatError, ModelError
from ..limits import loads_json, regular_file
from ..tensors import TensorData, WeightSource

INDEX = "model.safetensors.index.json"
SINGLE = "model.safetensors"


def read_json(path: Path, what: str = "file") -> dict[str, Any]:
    """A JSON object from the regular file ``path``, with bounds (`limits.loads_json`), or a
    `FormatError` naming the file."""
    regular_file(path, what)
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise FormatError(f"{path}: cannot read the {what} ({e.strerror or e})", "restore the model's files") from None
    data = loads_json(raw, str(path), "restore the model's files")
    if not isinstance(data, dict):
        raise FormatError(f"{path}: expected a JSON object", "restore the model's files")
    return data


def hf_config(folder: Path) -> dict[str, Any] | None:
    """``config.json`` of a transformers folder (one that has weights beside it), else None."""
    if not folder.is_dir() or not (folder / "config.json").is_file():
        return None
    if not ((folder / INDEX).is_file() or (folder / SINGLE).is_file()):
        return None
    cfg = read_json(folder / "config.json", "config")
    return cfg if "architectures" in cfg or "model_type" in cfg else None


def open_shards(folder: Path) -> WeightSource:
    """Every tensor of the folder's safetensors (sharded or not) as one lazy source; each shard
    is memory-mapped and validated; the index must name only shards that exist and hold them."""
    from ..formats.safetensors import load_safetensors

    if not (folder / INDEX).is_file():
        if not (folder / SINGLE).is_file():
            raise ModelError(f"{folder} has no {SINGLE} or {INDEX}", "pass a transformers model folder")
        return load_safetensors(folder / SINGLE)
    index = read_json(folder / INDEX, "index")
    weight_map = index.get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise FormatError(f"{folder / INDEX}: no weight_map", "restore the model's index file")
    shards: dict[str, WeightSource] = {}
    tensors: dict[str, TensorData] = {}
    for name, shard in weight_map.items():
        if not isinstance(shard, str) or Path(shard).name != shard or not shard.endswith(".safetensors"):
            raise FormatError(f"{folder / INDEX}: tensor {name!r} maps to {shard!r}", "shards are files beside it")
        if shard not in shards:
            if not (folder / shard).is_file():
                raise ModelError(f"{folder}: shard {shard} is missing", "download the model's every shard")
            shards[shard] = load_safetensors(folder / shard)
        if name not in shards[shard].tensors:
            raise FormatError(f"{folder / shard}: tensor {name!r} of the index is not in it", "the shard is stale")
        tensors[name] = shards[shard].tensors[name]
    return WeightSource(folder, tensors, {}, "safetensors")


_CONFIG_HINT = "restore the model's config.json"


def _value(cfg: Mapping[str, Any], key: str, default: Any) -> Any:
    """``cfg[key]``; transformers writes unset fields as null, which means ``default`` too."""
    value = cfg.get(key)
    return default if value is None else value


def config_count(cfg: Mapping[str, Any], key: str, where: str, default: Any = None, low: int = 1) -> int:
    """``cfg[key]`` (null or absent: ``default``) as an int in ``low..schema.MAX_COUNT``
    (`schema.count`), else `FormatError`."""
    return schema.count(_value(cfg, key, default), key, where, low=low, hint=_CONFIG_HINT)


def config_real(cfg: Mapping[str, Any], key: str, where: str, default: Any = None) -> float:
    """``cfg[key]`` (null or absent: ``default``) as a positive finite float (`schema.positive`),
    else `FormatError`."""
    return schema.positive(_value(cfg, key, default), key, where, hint=_CONFIG_HINT)
