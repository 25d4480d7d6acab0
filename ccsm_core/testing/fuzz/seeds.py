"""Valid tiny files of every kind the fuzz targets start from, built once into a folder."""

from __future__ import annotations

import functools
import io
import json
import os
import shutil
import struct
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

TEXT_VOCAB = ["<|end|>", "<|start|>", *"abcdefgh ", "ab", "cd"]
TEXT_TEMPLATE = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
MIMI_CONFIG: dict[str, Any] = {
    "seanet": {"dimension": 16, "n_filters": 4},
    "transformer": {
        "d_model": 16,
        "num_heads": 2,
        "num_layers": 1,
        "dim_feedforward": 32,
        "input_dimension": 16,
        "output_dimensions": [16],
    },
    "quantizer": {"dimension": 8, "input_dimension": 16, "output_dimension": 16},
}
SPM_CORPUS = ["the quick brown fox jumps over the lazy dog", "hello world, hello ccsm", "a b c d e f g"] * 20


def text_model(arch: str = "llama", dim: int = 32, heads: int = 4, kv: int = 2, layers: int = 1) -> tuple[dict, dict]:
    """GGUF metadata and float32 tensors of a tiny random text model (byte-level BPE vocabulary)."""
    rng = np.random.default_rng(0)
    ff, hd, n = 48, dim // heads, len(TEXT_VOCAB)
    md: dict[str, Any] = {
        f"{arch}.block_count": layers,
        f"{arch}.embedding_length": dim,
        f"{arch}.feed_forward_length": ff,
        f"{arch}.attention.head_count": heads,
        f"{arch}.attention.head_count_kv": kv,
        f"{arch}.context_length": 64,
        f"{arch}.attention.layer_norm_rms_epsilon": 1e-6,
        f"{arch}.rope.freq_base": 10000.0,
        "tokenizer.ggml.model": "gpt2",
        "tokenizer.ggml.pre": "gpt-2",
        "tokenizer.ggml.tokens": TEXT_VOCAB,
        "tokenizer.ggml.token_type": [3, 3] + [1] * (n - 2),
        "tokenizer.ggml.merges": ["a b", "c d"],
        "tokenizer.ggml.bos_token_id": 1,
        "tokenizer.ggml.eos_token_id": 0,
        "tokenizer.chat_template": TEXT_TEMPLATE,
    }

    def r(*shape: int) -> np.ndarray:
        return (rng.standard_normal(shape) / np.sqrt(shape[-1])).astype(np.float32)

    t = {"token_embd.weight": r(n, dim), "output_norm.weight": 1 + 0.1 * r(dim), "output.weight": r(n, dim)}
    for i in range(layers):
        p = f"blk.{i}."
        t[p + "attn_norm.weight"], t[p + "ffn_norm.weight"] = 1 + 0.1 * r(dim), 1 + 0.1 * r(dim)
        t[p + "attn_q.weight"], t[p + "attn_k.weight"], t[p + "attn_v.weight"] = (
            r(heads * hd, dim),
            r(kv * hd, dim),
            r(kv * hd, dim),
        )
        t[p + "attn_output.weight"], t[p + "ffn_down.weight"] = r(dim, heads * hd), r(dim, ff)
        t[p + "ffn_gate.weight"], t[p + "ffn_up.weight"] = r(ff, dim), r(ff, dim)
    return md, t


def wav_bytes(rate: int = 24_000, channels: int = 1, seconds: float = 0.1, fmt: str = "PCM_16") -> bytes:
    """A short sine tone as a WAV file."""
    import soundfile as sf

    n = int(rate * seconds)
    wave = 0.3 * np.sin(np.arange(n) * 2 * np.pi * 440 / rate).astype(np.float32)
    data = np.repeat(wave[:, None], channels, axis=1)
    buf = io.BytesIO()
    sf.write(buf, data, rate, format="WAV", subtype=fmt)
    return buf.getvalue()


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


class Seeds:
    """The seed files, made on first use under ``root`` (kept between runs of one process)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def _path(self, name: str) -> Path:
        return self.root / name

    def _made(self, name: str, build: Callable[[Path], object]) -> Path:
        """``root/name``, built by ``build(temporary path)`` unless it exists (renamed into
        place, so processes sharing ``root`` see it whole or not at all)."""
        path = self._path(name)
        if not path.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".seed-", dir=self.root)) / name
            build(tmp)
            try:
                os.rename(tmp, path)
            except OSError:  # another process made it first
                if not path.exists():
                    raise
            shutil.rmtree(tmp.parent, ignore_errors=True)
        return path

    @functools.cached_property
    def text_gguf(self) -> Path:
        from ...formats.gguf_writer import write_gguf

        md, t = text_model()
        return self._made("text.gguf", lambda p: write_gguf(p, md, t, "llama"))

    @functools.cached_property
    def hf_text(self) -> Path:
        """A transformers text folder (config.json, model.safetensors, tokenizer files)."""
        from ..hf_layout import write_hf_folder

        md, t = text_model()
        md = {**md, "general.architecture": "llama"}
        return self._made("hf-text", lambda p: write_hf_folder(p, md, t))

    @functools.cached_property
    def csm_dir(self) -> Path:
        """A tiny CSM checkpoint in the original layout with a tiny Mimi beside it."""
        from ...formats.safetensors import save_safetensors
        from ...loading.demo import random_mimi_tensors
        from ..models import write_tiny_csm

        def build(folder: Path) -> None:
            write_tiny_csm(folder)
            save_safetensors(folder / "mimi.safetensors", random_mimi_tensors(MIMI_CONFIG))
            (folder / "mimi_config.json").write_text(json.dumps(MIMI_CONFIG))

        return self._made("csm", build)

    @functools.cached_property
    def csm_gguf(self) -> Path:
        """The tiny CSM as one F16 GGUF (its tokenizer inside, no Mimi)."""
        from ...loading.csm_gguf import convert_csm

        csm = self.csm_dir

        def build(path: Path) -> None:
            only_csm = path.parent / "csm-only"
            only_csm.mkdir()
            for name in ("config.json", "model.safetensors", "tokenizer.json"):
                (only_csm / name).symlink_to((csm / name).resolve())
            convert_csm(only_csm, path, "f16")

        return self._made("csm.gguf", build)

    @functools.cached_property
    def spm_model(self) -> Path:
        """A small trained SentencePiece ``tokenizer.model``."""

        def build(path: Path) -> None:
            path.write_bytes(self._spm_bytes())

        return self._made("tokenizer.model", build)

    @staticmethod
    def _spm_bytes() -> bytes:
        import sentencepiece as spm

        model = io.BytesIO()
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(SPM_CORPUS),
            model_writer=model,
            model_type="bpe",
            vocab_size=320,
            hard_vocab_limit=False,
            minloglevel=2,
            byte_fallback=True,
            character_coverage=1.0,
        )
        return model.getvalue()

    @functools.cached_property
    def wav(self) -> bytes:
        return wav_bytes()

    @functools.cached_property
    def codes(self) -> bytes:
        rng = np.random.default_rng(0)
        return npy_bytes(rng.integers(0, 2048, (6, 32), dtype=np.int64))

    @functools.cached_property
    def voice(self) -> bytes:
        from ...voices import Voice, VoiceTurn, voice_bytes

        rng = np.random.default_rng(0)
        turns = (
            VoiceTurn("Hello there.", rng.integers(0, 2048, (32, 3))),
            VoiceTurn("Again.", rng.integers(0, 2048, (32, 2))),
        )
        return voice_bytes(Voice("ann", 1, turns, "0" * 16, "demo", "2026-01-01T00:00:00Z"))


def u32(value: int) -> bytes:
    return struct.pack("<I", value % 2**32)
