"""ccsm: Sesame's CSM-1B conversational speech model, and Llama-family GGUF models, on a plugin core."""

from __future__ import annotations

from .errors import (
    BackendUnavailable,
    CcsmError,
    FormatError,
    GenerationError,
    ModelError,
    PluginError,
    UsageError,
)
from .hookspecs import hookimpl
from .version import __version__

__all__ = [
    "__version__",
    "hookimpl",
    "CcsmError",
    "UsageError",
    "FormatError",
    "ModelError",
    "PluginError",
    "BackendUnavailable",
    "GenerationError",
    "get_backend",
    "Segment",
    "load_csm",
    "Generator",
]


def __getattr__(name: str):  # lazy public API: keep `import ccsm_core` cheap
    if name == "get_backend":
        from .backends import get_backend

        return get_backend
    if name in ("Segment", "Generator"):
        from . import generator

        return getattr(generator, name)
    if name == "load_csm":
        from .loading.csm import load_csm

        return load_csm
    raise AttributeError(name)
