"""Tiny random checkpoints in the real layouts, for tests that must not download anything."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..models.config import CsmConfig, LlamaConfig
from ..models.llama import expected_shapes

TINY_CONFIG = CsmConfig(
    backbone=LlamaConfig(num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32, intermediate_dim=64),
    decoder=LlamaConfig(num_layers=1, num_heads=2, num_kv_heads=1, embed_dim=16, intermediate_dim=32),
    text_vocab_size=128, backbone_flavor="test-backbone", decoder_flavor="test-decoder")

# a character-level tokenizer.json: ids 1/2 are begin/end of text, 3.. the ASCII characters
TOKENIZER_JSON = {
    "version": "1.0", "truncation": None, "padding": None,
    "added_tokens": [{"id": i, "content": c, "single_word": False, "lstrip": False, "rstrip": False,
                      "normalized": False, "special": True}
                     for i, c in ((0, "<|pad|>"), (1, "<|begin_of_text|>"), (2, "<|end_of_text|>"))],
    "normalizer": None,
    "pre_tokenizer": {"type": "Split", "pattern": {"String": ""}, "behavior": "Isolated", "invert": False},
    "post_processor": None, "decoder": {"type": "Fuse"},
    "model": {"type": "WordLevel", "unk_token": "<|pad|>",
              "vocab": {"<|pad|>": 0, "<|begin_of_text|>": 1, "<|end_of_text|>": 2,
                        **{chr(c): c for c in range(32, 127)}}},
}


def tiny_csm_tensors(cfg: CsmConfig = TINY_CONFIG, seed: int = 0) -> dict[str, np.ndarray]:
    """Random weights with the original parameter names and shapes."""
    rng = np.random.default_rng(seed)
    shapes = {**expected_shapes(cfg.backbone, "backbone"), **expected_shapes(cfg.decoder, "decoder")}
    d, dd, v, n = cfg.backbone.embed_dim, cfg.decoder.embed_dim, cfg.audio_vocab_size, cfg.audio_num_codebooks
    shapes.update({"text_embeddings.weight": (cfg.text_vocab_size, d), "audio_embeddings.weight": (v * n, d),
                   "projection.weight": (dd, d), "codebook0_head.weight": (v, d), "audio_head": (n - 1, dd, v)})
    out = {}
    for name, shape in shapes.items():
        if name.endswith(".scale"):
            out[name] = (1.0 + 0.1 * rng.standard_normal(shape)).astype(np.float32)
        else:
            out[name] = (rng.standard_normal(shape) / np.sqrt(shape[-1] if len(shape) > 1 else 1)).astype(np.float32)
    return out


def write_tiny_csm(folder: Path, cfg: CsmConfig = TINY_CONFIG, seed: int = 0) -> Path:
    """Write ``config.json``, ``model.safetensors`` and ``tokenizer.json`` into ``folder``."""
    from ..formats.safetensors import save_safetensors

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(cfg.as_dict(), indent=1))
    save_safetensors(folder / "model.safetensors", tiny_csm_tensors(cfg, seed))
    (folder / "tokenizer.json").write_text(json.dumps(TOKENIZER_JSON))
    return folder
