"""llama.cpp's logits for a GGUF through llama-cpp-python (optional: importing this module raises
ImportError without it). CPU, 2 threads, float32 KV cache, no flash attention, no extra buffer
types, so only the order of float32 operations differs from ccsm's NumPy backend."""

from __future__ import annotations

from pathlib import Path

import llama_cpp
import numpy as np


def _plain_cpu_params() -> object:
    params = _DEFAULTS()
    params.use_extra_bufts = False  # no AMX or repacked buffers
    return params


_DEFAULTS = llama_cpp.llama_model_default_params


def llama_cpp_logits(path: Path, ids: list[int]) -> np.ndarray:
    """Logits ``[len(ids), vocab]`` at every position of ``ids``."""
    llama_cpp.llama_model_default_params = llama_cpp.llama.llama_cpp.llama_model_default_params = _plain_cpu_params
    llm = llama_cpp.Llama(
        model_path=str(path),
        n_ctx=64,
        n_batch=64,
        n_threads=2,
        n_threads_batch=2,
        logits_all=True,
        type_k=0,
        type_v=0,
        flash_attn=False,
        swa_full=True,
        verbose=False,
    )
    llm.eval(ids)
    return np.asarray(llm.scores[: len(ids)], np.float32).copy()


def system_info() -> str:
    return llama_cpp.llama_print_system_info().decode().strip()
