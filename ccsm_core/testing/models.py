"""Tiny random checkpoints in the real layouts, for tests that must not download anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..loading.demo import TOKENIZER_JSON, random_csm_tensors
from ..models.config import CsmConfig, LlamaConfig

TINY_CONFIG = CsmConfig(
    backbone=LlamaConfig(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, intermediate_dim=64),
    decoder=LlamaConfig(num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16, intermediate_dim=32),
    text_vocab_size=128,
    backbone_flavor="test-backbone",
    decoder_flavor="test-decoder",
)


def tiny_csm_tensors(cfg: CsmConfig = TINY_CONFIG, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with the original parameter names and shapes (the tiny test shape by default)."""
    return random_csm_tensors(cfg, seed)


def write_tiny_csm(folder: Path, cfg: CsmConfig = TINY_CONFIG, seed: int = 0) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer.json`` into ``folder``."""
    from ..formats.safetensors import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.as_dict(), indent=1))
    save_safetensors(folder / "model.safetensors", tiny_csm_tensors(cfg, seed))
    (folder / "tokenizer.json").write_text(json.dumps(TOKENIZER_JSON))
    return folder
