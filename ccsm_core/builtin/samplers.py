"""Registers the built-in logit processors and samplers."""

from __future__ import annotations

from .. import hookimpl

_PROCESSORS = {
    "temperature": "divide logits by the temperature",
    "top-k": "keep the k most likely (ties kept)",
    "top-p": "nucleus sampling",
    "min-p": "drop ids below p x the top probability",
    "repetition-penalty": "CTRL repetition penalty",
    "frequency-penalty": "subtract penalty x count",
    "presence-penalty": "subtract penalty once per seen id",
    "logit-bias": "add a bias per id",
}
_SAMPLERS = {"greedy": "most likely id", "categorical": "random draw (the original's exponential race)"}


def _lazy(name: str, table: str):
    def factory(**params):
        from .. import sampling

        return getattr(sampling, table)[name](**params)
    factory.__name__ = name
    return factory


@hookimpl
def register_samplers(register):
    for name, summary in _PROCESSORS.items():
        register(name, _lazy(name, "PROCESSORS"), kind="processor", summary=summary)
    for name, summary in _SAMPLERS.items():
        register(name, _lazy(name, "SAMPLERS"), kind="sampler", summary=summary)
