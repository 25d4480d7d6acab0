"""Loading Mimi: moshi's weights (any registered format) and its optional ``mimi_config.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..models.mimi import Mimi
from .checkpoint import read_mimi_config
from .weights import open_weights


def load_mimi(path: str | Path, config_path: str | Path | None = None, backend: Any = None) -> Mimi:
    """Load moshi Mimi weights (safetensors) and optional ``mimi_config.json``; default: real sizes."""
    if backend is None:
        from ..backends.numpy_backend import NumpyBackend

        backend = NumpyBackend()
    config = read_mimi_config(Path(config_path)) if config_path is not None else None
    return Mimi.from_tensors(backend, open_weights(path), config)


def load_codec(path: Path, mimi: str | None, backend: Any, *, inside_gguf: bool = True) -> Mimi | None:
    """The Mimi codec for a model at ``path``: ``mimi`` (``--mimi``), inside a CSM GGUF (unless
    ``inside_gguf`` is False: the caller read that file already), beside the model, or cached."""
    from .csm import is_gguf
    from .sources import find_mimi

    if not mimi and inside_gguf and is_gguf(path):
        from .csm_gguf import GGUFCsm

        g = GGUFCsm(path)
        if g.mimi_tensors:
            return Mimi.from_tensors(backend, g.mimi_tensors, g.mimi_config)
    found = find_mimi(path, mimi)
    return load_mimi(found[0], found[1], backend) if found is not None else None
