"""Watermark keys: random generation and key files (hex text, 16 to 64 bytes)."""

from __future__ import annotations

import os
import secrets

from ccsm_core.errors import FormatError

KEY_BYTES = 32


def generate() -> bytes:
    """A fresh random private key."""
    return secrets.token_bytes(KEY_BYTES)


def dumps(key: bytes) -> str:
    """The key-file text of ``key``."""
    return key.hex() + "\n"


def load(path: str) -> bytes:
    """Read a key file written by ``ccsm watermark keygen``; a `FormatError` if unusable."""
    hint = "make one with: ccsm watermark keygen -o KEYFILE"
    if not os.path.isfile(path):
        raise FormatError(f"key file {path!r} not found", hint)
    try:
        with open(path, "rb") as f:
            raw = f.read(4096)
        text = raw.decode("ascii").strip()
        key = bytes.fromhex(text)
    except (UnicodeDecodeError, ValueError):
        raise FormatError(f"key file {path!r} is not hex text", hint) from None
    if not 16 <= len(key) <= 64:
        raise FormatError(f"key file {path!r} holds {len(key)} bytes; a key has 16 to 64", hint)
    return key
