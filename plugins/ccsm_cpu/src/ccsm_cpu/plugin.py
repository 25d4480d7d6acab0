"""Registers the ``ggml-cpu`` backend. Imports only ``ccsm_core``: the library loads on use."""

from __future__ import annotations

from typing import Any

from ccsm_core import hookimpl


def _available() -> str | None:
    """``None`` if the ggml library loads and passes its smoke test, else the reason."""
    from .lib import unavailable_reason

    return unavailable_reason()


def factory(**options: Any) -> Any:
    """``GgmlBackend(threads=N)``; ``threads`` defaults to the number of cores."""
    from .backend import GgmlBackend

    return GgmlBackend(**options)


@hookimpl
def register_backends(register: Any) -> None:
    register("ggml-cpu", factory, priority=10, available=_available, devices=("cpu",),
             summary="GGML on the CPU (quantized weights, threads); from ggml-python 0.0.45")
