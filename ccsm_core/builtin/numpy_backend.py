"""Registers the NumPy reference backend."""

from __future__ import annotations

from ..hookspecs import hookimpl


def _factory(**options):
    from ..backends.numpy_backend import NumpyBackend

    return NumpyBackend(**options)


@hookimpl
def register_backends(register):
    register(
        "numpy",
        _factory,
        priority=0,
        available=None,
        devices=("cpu",),
        batching=True,
        summary="NumPy reference backend (float32, eager)",
    )
