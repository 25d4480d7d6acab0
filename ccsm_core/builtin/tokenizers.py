"""Registers the built-in tokenizers."""
from __future__ import annotations

from .. import hookimpl


@hookimpl
def register_tokenizers(register):
    pass
