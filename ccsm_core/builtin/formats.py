"""Registers the built-in weight formats."""
from __future__ import annotations

from .. import hookimpl


@hookimpl
def register_formats(register):
    pass
