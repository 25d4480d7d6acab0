"""The files of a CSM checkpoint in the original layout: ``config.json``, the weights (any registered
format), the tokenizer."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import FormatError, ModelError
from ..limits import loads_json, regular_file
from ..models.config import CsmConfig
from ..models.mimi_schema import check_sections
from .weights import PICKLE_HINT, PICKLE_SUFFIXES, weight_suffixes

WEIGHTS_STEM = "model"  # a checkpoint folder holds model.<suffix of a registered format>
TOKENIZER_NAMES = ("tokenizer.json", "tokenizer.model")


@dataclass
class ModelFiles:
    """Where the pieces of one CSM checkpoint are."""

    config: Path
    weights: Path
    tokenizer: Path | None


def find_model_files(path: str | Path) -> ModelFiles:
    """Resolve a folder (``config.json`` + ``model.safetensors``, or ``model.<suffix>`` of another
    registered format) or a weights file beside its ``config.json``."""
    p = Path(path).expanduser()
    if p.suffix.lower() in PICKLE_SUFFIXES:
        raise FormatError(f"{p} is a pickled PyTorch checkpoint", PICKLE_HINT)
    if not p.exists():
        raise ModelError(f"model {p} does not exist", "pass a folder with config.json and model.safetensors")
    if not p.is_dir():
        regular_file(p, "model")  # a FIFO or device would block or never end
    folder = p if p.is_dir() else p.parent
    if p.is_file():
        weights = p
    else:
        found = [folder / (WEIGHTS_STEM + s) for s in weight_suffixes() if (folder / (WEIGHTS_STEM + s)).is_file()]
        if not found:
            pickles = sorted(x.name for x in folder.iterdir() if x.suffix.lower() in PICKLE_SUFFIXES)
            if pickles:
                raise FormatError(f"{folder} holds only pickled weights ({', '.join(pickles)})", PICKLE_HINT)
            raise ModelError(f"{folder} has no model.safetensors", "pass a CSM checkpoint folder")
        weights = found[0]
    config = folder / "config.json"
    if not config.exists():
        raise ModelError(
            f"{folder} has no config.json", "the original checkpoint folder has one; copy it beside the weights"
        )
    tokenizer = next((folder / n for n in TOKENIZER_NAMES if (folder / n).exists()), None)
    return ModelFiles(config, weights, tokenizer)


MAX_CONFIG_BYTES = 1 << 20  # a config.json is a few hundred bytes


def read_json_file(path: Path, what: str, hint: str, max_bytes: int = MAX_CONFIG_BYTES) -> Any:
    """Bounded JSON from a regular file of at most ``max_bytes`` (`FormatError` otherwise)."""
    regular_file(path, what)
    try:
        with open(path, "rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as e:
        raise FormatError(f"{path}: cannot read {what} ({e.strerror or e})", "check the file's permissions") from None
    if len(raw) > max_bytes:
        raise FormatError(f"{path}: {what} is larger than {max_bytes} bytes", hint)
    return loads_json(raw, str(path), hint)


def read_config(path: Path) -> CsmConfig:
    """The checked `CsmConfig` of an original checkpoint's ``config.json``."""
    data = read_json_file(path, "config", "restore the model's config.json")
    return CsmConfig.from_dict(data, str(path))


MIMI_HINT = "pass moshi's mimi_config.json, or none for the released Mimi"


def read_mimi_config(path: Path) -> dict[str, Any]:
    """moshi's ``mimi_config.json``: bounded JSON, an object whose sections are objects (the
    values are checked with the defaults merged in, by `mimi_config`)."""
    data = read_json_file(path, "Mimi config", MIMI_HINT)
    return dict(check_sections(data, str(path)))
