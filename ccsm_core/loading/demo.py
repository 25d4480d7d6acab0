"""The demo model: a small random-weight CSM + Mimi in the original layout.

It exercises every step of ``ccsm run`` (tokenizer, backbone, decoder, Mimi, audio out) in a
second, without any download. Its weights are random: it does not produce speech.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..models.config import CsmConfig, LlamaConfig
from ..models.csm import csm_shapes

DEMO_VERSION = 1
DEMO_SEED = 20240226
DEMO_CSM = CsmConfig(
    backbone=LlamaConfig(num_layers=4, num_heads=4, num_kv_heads=2, embed_dim=64, intermediate_dim=256),
    decoder=LlamaConfig(num_layers=2, num_heads=4, num_kv_heads=1, embed_dim=32, intermediate_dim=128),
    text_vocab_size=128,
    backbone_flavor="demo-backbone",
    decoder_flavor="demo-decoder",
)
DEMO_MIMI = {
    "seanet": {"dimension": 64, "n_filters": 8},
    "transformer": {
        "d_model": 64,
        "num_heads": 4,
        "num_layers": 2,
        "dim_feedforward": 256,
        "input_dimension": 64,
        "output_dimensions": [64],
    },
    "quantizer": {"dimension": 32, "input_dimension": 64, "output_dimension": 64},
}
NOTICE = "the demo model has random weights: its audio is noise, not speech"


# a character-level tokenizer.json: ids 1/2 are begin/end of text, 3.. the ASCII characters
TOKENIZER_JSON = {
    "version": "1.0",
    "truncation": None,
    "padding": None,
    "added_tokens": [
        {
            "id": i,
            "content": c,
            "single_word": False,
            "lstrip": False,
            "rstrip": False,
            "normalized": False,
            "special": True,
        }
        for i, c in ((0, "<|pad|>"), (1, "<|begin_of_text|>"), (2, "<|end_of_text|>"))
    ],
    "normalizer": None,
    "pre_tokenizer": {"type": "Split", "pattern": {"String": ""}, "behavior": "Isolated", "invert": False},
    "post_processor": None,
    "decoder": {"type": "Fuse"},
    "model": {
        "type": "WordLevel",
        "unk_token": "<|pad|>",
        "vocab": {"<|pad|>": 0, "<|begin_of_text|>": 1, "<|end_of_text|>": 2, **{chr(c): c for c in range(32, 127)}},
    },
}


def random_csm_tensors(cfg: CsmConfig, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with the original parameter names and shapes."""
    rng = np.random.default_rng(seed)
    shapes = csm_shapes(cfg)
    out = {}
    for name, shape in shapes.items():
        if name.endswith(".scale"):
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) / np.sqrt(shape[-1] if len(shape) > 1 else 1)).astype(np.float32)
    return out


def random_mimi_tensors(config: dict | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with moshi's names and the shapes ``config`` implies."""
    from ..backends.numpy_backend import NumpyBackend
    from ..models.mimi import Mimi, mimi_config
    from ..models.mimi_layers import Weights

    rng = np.random.default_rng(seed)
    made: dict[str, np.ndarray] = {}

    class RandomWeights(Weights):
        def _raw(self, name: str, shape: Sequence[int]) -> Any:
            shape = tuple(shape)
            if name.endswith("cluster_usage"):
                arr = np.ones(shape, np.float32)
            elif name.endswith(("norm1.weight", "norm2.weight")):
                arr = np.ones(shape, np.float32)
            elif name.endswith((".bias", "norm1.bias", "norm2.bias")):
                arr = np.zeros(shape, np.float32)
            elif "layer_scale" in name:
                arr = np.full(shape, 0.01, np.float32)
            else:
                fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
                arr = (rng.standard_normal(shape) / np.sqrt(fan_in)).astype(np.float32)
            made[name] = arr
            return arr

    Mimi(NumpyBackend(), RandomWeights(NumpyBackend(), {}), mimi_config(config))
    return made


def demo_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ccsm" / f"demo-v{DEMO_VERSION}"


def ensure_demo() -> Path:
    """The demo model folder, generated deterministically on first use (written atomically)."""
    from ..formats.safetensors import save_safetensors

    target = demo_dir()
    if (target / "complete").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".demo-", dir=target.parent))
    try:
        (tmp / "config.json").write_text(json.dumps(DEMO_CSM.as_dict(), indent=1))
        save_safetensors(tmp / "model.safetensors", random_csm_tensors(DEMO_CSM, DEMO_SEED))
        (tmp / "tokenizer.json").write_text(json.dumps(TOKENIZER_JSON))
        save_safetensors(tmp / "mimi.safetensors", random_mimi_tensors(DEMO_MIMI, DEMO_SEED))
        (tmp / "mimi_config.json").write_text(json.dumps(DEMO_MIMI, indent=1))
        (tmp / "README.txt").write_text(f"ccsm demo model v{DEMO_VERSION}: {NOTICE}.\n")
        (tmp / "complete").write_text("")
        if (target / "complete").exists():
            return target  # another process finished first: keep its copy (it may be loading it)
        if target.exists():  # an incomplete leftover: set it aside, then take its place
            stale = Path(tempfile.mkdtemp(prefix=".demo-stale-", dir=target.parent))
            os.replace(target, stale / "old")
            shutil.rmtree(stale, ignore_errors=True)
        try:
            os.rename(tmp, target)
        except OSError:  # another process's copy landed in between
            if not (target / "complete").exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
