"""The files of a CSM checkpoint in the original layout: ``config.json``, the weights (any registered
format), the tokenizer."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import FormatError, ModelError
from ..models.config import CsmConfig
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


def read_config(path: Path) -> CsmConfig:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: not readable JSON ({e})", "restore the model's config.json") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return CsmConfig.from_dict(data, str(path))
