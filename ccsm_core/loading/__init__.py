"""The loading layer: where models come from and how their files become models.

Every weight file is opened through the formats registry (`weights.open_weights`); model
sources and discovery (`sources`: folders, the Hugging Face cache, the demo model, the bundled
SmolLM2) and the assembly of CSM (`csm`, `csm_gguf`), Mimi (`mimi`) and text models (`text`)
live here. Models below import only the backend contract and tensor types; formats import
nothing above them.
"""

from __future__ import annotations

from typing import Any

__all__ = ["load_csm", "load_mimi", "load_text_model", "open_weights", "resolve_model"]


def __getattr__(name: str) -> Any:  # keep `import ccsm_core.loading` cheap
    if name == "load_csm":
        from .csm import load_csm

        return load_csm
    if name == "load_mimi":
        from .mimi import load_mimi

        return load_mimi
    if name == "load_text_model":
        from .text import load_text_model

        return load_text_model
    if name == "open_weights":
        from .weights import open_weights

        return open_weights
    if name == "resolve_model":
        from .sources import resolve_model

        return resolve_model
    raise AttributeError(name)
