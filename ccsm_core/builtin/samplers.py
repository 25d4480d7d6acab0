"""Registers the built-in samplers."""
from __future__ import annotations

from .. import hookimpl


@hookimpl
def register_samplers(register):
    pass
