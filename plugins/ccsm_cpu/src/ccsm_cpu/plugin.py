"""Registers the ``ggml-cpu`` backend. Imports only ``ccsm_core``: the library loads on use."""

from __future__ import annotations

from typing import Any

from ccsm_core import hookimpl


def _available() -> str | None:
    """``None`` if the ggml library loads and passes its smoke test, else the reason."""
    from .lib import unavailable_reason

    return unavailable_reason()


def _describe() -> str:
    """Default threads, the SIMD features ggml was built with and uses here, repacking."""
    from ._load import usable_cores
    from .lib import load

    g = load()
    repack = "yes (Q4_0, Q4_K)" if g.repack_buffer_type() is not None else "no"
    half = (
        "; F16 products sum in half precision (llama.cpp's do not: rebuild ggml-python with "
        "CMAKE_ARGS='-DCMAKE_C_FLAGS=-mno-avx512fp16 -DCMAKE_CXX_FLAGS=-mno-avx512fp16')"
        if g.f16_accumulates_in_half
        else ""
    )
    return (
        f"ggml {g.version}; threads up to {usable_cores()}, fewer while other processes keep cores busy; "
        f"kernels {g.kernel_family()} "
        f"(SIMD {' '.join(g.features()) or 'none'}); repack {repack}{half}"
    )


def factory(**options: Any) -> Any:
    """``GgmlBackend(threads=N)``; ``threads`` defaults to the number of cores."""
    from .backend import GgmlBackend

    return GgmlBackend(**options)


@hookimpl
def register_backends(register: Any) -> None:
    register(
        "ggml-cpu",
        factory,
        priority=10,
        available=_available,
        devices=("cpu",),
        describe=_describe,
        batching=True,
        summary="GGML on the CPU (quantized weights, threads); from ggml-python 0.0.45",
    )
