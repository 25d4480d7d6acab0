"""Registers the built-in logit processors and samplers; holds the built-in sampling defaults.

Light on purpose (no NumPy): the command line reads the defaults, and each factory imports
``ccsm_core.sampling`` only when called.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from ..hookspecs import hookimpl

#: The built-in processors and samplers (name -> summary): the one list of them. Each factory is
#: the function of ``ccsm_core.sampling`` named like it, dashes as underscores (``top-k``: ``top_k``).
PROCESSORS = {
    "temperature": "divide logits by the temperature",
    "top-k": "keep the k most likely (ties kept)",
    "top-p": "nucleus sampling",
    "min-p": "drop ids below p x the top probability",
    "repetition-penalty": "CTRL repetition penalty",
    "frequency-penalty": "subtract penalty x count",
    "presence-penalty": "subtract penalty once per seen id",
    "logit-bias": "add a bias per id",
}
SAMPLERS = {"greedy": "most likely id", "categorical": "random draw (the original's exponential race)"}

#: Sampling defaults (``SamplingSettings`` fields) of speech and of text, for the settings classes
#: and the commands alike. Speech: the original CSM's; text: llama.cpp's.
SPEECH_DEFAULTS: Mapping[str, Any] = MappingProxyType({"temperature": 0.9, "topk": 50})
TEXT_DEFAULTS: Mapping[str, Any] = MappingProxyType({"temperature": 0.8, "topk": 40, "top_p": 0.95, "min_p": 0.05})


def _lazy(name: str):
    def factory(**params):
        from .. import sampling

        return getattr(sampling, name.replace("-", "_"))(**params)

    factory.__name__ = name
    return factory


@hookimpl
def register_samplers(register):
    for name, summary in PROCESSORS.items():
        register(name, _lazy(name), kind="processor", summary=summary)
    for name, summary in SAMPLERS.items():
        register(name, _lazy(name), kind="sampler", summary=summary)
